"""Decision rules in approvals.services: separation of duties, four-eyes, narrowing, lapse, concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from approvals.choices import DecisionKind, RequestState
from approvals.models import Decision, RegistrationRequest
from approvals.services import (
    DecisionConflict,
    DecisionForbidden,
    DecisionInvalid,
    request_approve,
    request_deny,
    request_lapse_due,
    request_withdraw,
)
from inventory.choices import ClientState, OutboxOperation
from inventory.models import Client, OutboxEntry
from portal.audit import Actor, events_for
from tests.factories import ClientFactory, TokenFactory, UserFactory


def _unchanged(req, *, decisions=0):
    fresh = RegistrationRequest.objects.get(pk=req.pk)
    assert fresh.state == RequestState.PENDING
    assert fresh.client_id is None
    assert Decision.objects.filter(request=req).count() == decisions
    return fresh


def _actions(req):
    return list(events_for("registration_request", req.public_id).values_list("action", flat=True))


# --- separation of duties -----------------------------------------------------------------------


def test_owner_cannot_approve_or_deny_own_request(make_request, owner):
    owner.groups.add(Group.objects.get(name="approver"))  # an approver who sponsors the request
    req = make_request()
    with pytest.raises(DecisionForbidden):
        request_approve(reg_request=req, approver=owner, reason="mine")
    with pytest.raises(DecisionForbidden):
        request_deny(reg_request=req, approver=owner, reason="mine")
    _unchanged(req)
    assert _actions(req) == []


def test_token_owner_who_is_not_the_sponsor_cannot_approve(make_request, approver):
    # bob minted the token that made the request (the requester) although olivia sponsors it
    req = make_request(token=TokenFactory(owner=approver))
    with pytest.raises(DecisionForbidden, match="requested or sponsor"):
        request_approve(reg_request=req, approver=approver, reason="ok")
    _unchanged(req)


def test_parent_client_owner_cannot_approve_spawn(make_request, approver):
    parent = ClientFactory(owner=approver)
    req = make_request(parent_client=parent, via="spawn")
    with pytest.raises(DecisionForbidden):
        request_approve(reg_request=req, approver=approver, reason="ok")
    _unchanged(req)


def test_service_account_with_approver_role_cannot_approve(medium_request):
    robot = UserFactory(username="robot", roles=["approver"], is_service_account=True)
    with pytest.raises(DecisionForbidden, match="service accounts"):
        request_approve(reg_request=medium_request, approver=robot, reason="ok")
    _unchanged(medium_request)


@pytest.mark.parametrize("actor", [Actor.agent("ci-bot", "x"), Actor.system("sweeper")])
def test_non_user_actor_cannot_approve(medium_request, actor):
    with pytest.raises(DecisionForbidden):
        request_approve(reg_request=medium_request, approver=actor, reason="ok")
    _unchanged(medium_request)


def test_user_actor_resolves_to_the_person(medium_request, approver):
    approved = request_approve(reg_request=medium_request, approver=Actor.user(approver), reason="")
    assert approved.state == RequestState.APPROVED
    assert RegistrationRequest.objects.get(pk=medium_request.pk).state == RequestState.APPROVED


def test_only_approvers_decide(medium_request, security_user):
    with pytest.raises(DecisionForbidden, match="only approvers"):
        request_approve(reg_request=medium_request, approver=security_user, reason="ok")
    with pytest.raises(DecisionForbidden):
        request_deny(reg_request=medium_request, approver=security_user, reason="no")
    _unchanged(medium_request)


# --- four eyes ---------------------------------------------------------------------------------


def test_high_tier_needs_two_distinct_approvers(high_request, approver, approver2):
    request_approve(reg_request=high_request, approver=approver, reason="needed for deploys")
    fresh = _unchanged(high_request, decisions=1)
    assert _actions(high_request) == ["request.approve"]

    with pytest.raises(DecisionConflict):
        request_approve(reg_request=fresh, approver=approver, reason="again")
    _unchanged(high_request, decisions=1)

    approved = request_approve(reg_request=fresh, approver=approver2, reason="agreed")
    assert approved.state == RequestState.APPROVED
    assert fresh.state == RequestState.PENDING  # the caller's instance is left as it was: the service returns
    stored = RegistrationRequest.objects.get(pk=high_request.pk)
    client = Client.objects.get(registration_id=high_request.public_id)
    assert approved.client_id == stored.client_id == client.pk
    assert client.state == ClientState.PROVISIONING
    assert client.owner_id == high_request.owner_id
    assert sorted(client.scopes) == ["repo:write", "tickets:read"]
    assert client.risk_tier == "high"
    assert client.created_via == "token"
    assert client.policy_version == 1
    assert OutboxEntry.objects.filter(client=client, operation=OutboxOperation.CREATE).count() == 1
    assert _actions(high_request) == ["request.approve", "request.approved"]
    assert approved.decision_reason == stored.decision_reason == "agreed"
    assert stored.decided_at is not None


def test_medium_tier_one_approval_creates_client(medium_request, approver):
    approved = request_approve(reg_request=medium_request, approver=approver, reason="")
    assert approved.state == RegistrationRequest.objects.get(pk=medium_request.pk).state == RequestState.APPROVED
    assert approved.client.state == ClientState.PROVISIONING
    assert approved.client.expires_at > timezone.now() + timedelta(minutes=59)


def test_a_request_without_granted_ttl_never_becomes_a_client(medium_request, idp, approver):
    """request_client_create is reached only after an approval granted a lifetime; without one it refuses
    clearly and writes nothing (rather than failing inside timedelta after taking the quota lock)."""
    from approvals.services.clients import request_client_create

    assert medium_request.granted_ttl is None
    with pytest.raises(ValueError, match="has no granted TTL"):
        request_client_create(
            reg_request=medium_request, idp=idp, actor=Actor.user(approver), reason="", now=timezone.now()
        )
    assert Client.objects.count() == OutboxEntry.objects.count() == 0
    _unchanged(medium_request)


def test_deny_by_anyone_ends_the_request(high_request, approver, approver2):
    request_approve(reg_request=high_request, approver=approver, reason="fine by me")
    request_deny(reg_request=high_request, approver=approver2, reason="prod write is not justified")
    fresh = RegistrationRequest.objects.get(pk=high_request.pk)
    assert fresh.state == RequestState.DENIED
    assert fresh.decision_reason == "prod write is not justified"
    assert fresh.client_id is None
    assert not Client.objects.filter(registration_id=high_request.public_id).exists()
    with pytest.raises(DecisionConflict):
        request_approve(reg_request=fresh, approver=UserFactory(username="dan", roles=["approver"]), reason="x")
    assert _actions(high_request) == ["request.approve", "request.deny"]


def test_deciding_non_pending_is_conflict(medium_request, approver, approver2):
    request_deny(reg_request=medium_request, approver=approver, reason="no")
    with pytest.raises(DecisionConflict):
        request_deny(reg_request=medium_request, approver=approver2, reason="no")
    assert Decision.objects.filter(request=medium_request).count() == 1


# --- reasons, narrowing ----------------------------------------------------------------------


def test_deny_needs_reason(medium_request, approver):
    with pytest.raises(DecisionInvalid, match="reason"):
        request_deny(reg_request=medium_request, approver=approver, reason="  ")
    _unchanged(medium_request)


def test_high_tier_approve_needs_reason(high_request, approver):
    with pytest.raises(DecisionInvalid, match="reason"):
        request_approve(reg_request=high_request, approver=approver, reason="")
    _unchanged(high_request)


def test_approve_may_narrow_scopes_and_shorten_ttl(high_request, approver, approver2):
    request_approve(
        reg_request=high_request, approver=approver, reason="read only", scopes=["tickets:read"], ttl_seconds=600
    )
    assert Decision.objects.get(request=high_request).granted_scopes == ["tickets:read"]
    # the second approver sees the narrowed grant and cannot widen back
    with pytest.raises(DecisionInvalid, match="narrow"):
        request_approve(reg_request=high_request, approver=approver2, reason="x", scopes=["repo:write"])
    request_approve(reg_request=high_request, approver=approver2, reason="ok")
    client = RegistrationRequest.objects.get(pk=high_request.pk).client
    assert client.scopes == ["tickets:read"]
    assert client.expires_at <= timezone.now() + timedelta(seconds=600)


def test_approve_cannot_widen_scopes(medium_request, approver):
    with pytest.raises(DecisionInvalid, match="narrow"):
        request_approve(reg_request=medium_request, approver=approver, reason="", scopes=["tickets:read", "repo:write"])
    _unchanged(medium_request)


def test_approve_cannot_extend_ttl(medium_request, approver):
    with pytest.raises(DecisionInvalid, match="shorten"):
        request_approve(reg_request=medium_request, approver=approver, reason="", ttl_seconds=7200)
    with pytest.raises(DecisionInvalid):
        request_approve(reg_request=medium_request, approver=approver, reason="", scopes=[])
    _unchanged(medium_request)


def test_finalize_without_idp_is_conflict_and_rolls_back(make_request, approver, idp):
    idp.is_default = False
    idp.save()
    req = make_request(idp=None)
    with pytest.raises(DecisionConflict, match="identity provider"):
        request_approve(reg_request=req, approver=approver, reason="")
    _unchanged(req)
    assert _actions(req) == []


# --- withdraw -----------------------------------------------------------------------------------


def test_owner_withdraws(medium_request, owner, approver):
    with pytest.raises(DecisionForbidden):
        request_withdraw(reg_request=medium_request, actor=approver)
    _unchanged(medium_request)
    request_withdraw(reg_request=medium_request, actor=owner)
    assert RegistrationRequest.objects.get(pk=medium_request.pk).state == RequestState.WITHDRAWN
    assert _actions(medium_request) == ["request.withdraw"]
    with pytest.raises(DecisionConflict):
        request_withdraw(reg_request=medium_request, actor=owner)


# --- lapse ------------------------------------------------------------------------------------


def test_lapse_due(make_request, settings):
    settings.REGISTRAR_REQUEST_LAPSE_DAYS = 7
    old = [make_request() for _ in range(3)]
    fresh = make_request()
    RegistrationRequest.objects.filter(pk__in=[r.pk for r in old]).update(created_at=timezone.now() - timedelta(days=8))
    decided_old = make_request(state=RequestState.DENIED)
    RegistrationRequest.objects.filter(pk=decided_old.pk).update(created_at=timezone.now() - timedelta(days=30))

    assert request_lapse_due(batch_size=2) == 3
    assert set(RegistrationRequest.objects.filter(state=RequestState.LAPSED).values_list("pk", flat=True)) == {
        r.pk for r in old
    }
    assert RegistrationRequest.objects.get(pk=fresh.pk).state == RequestState.PENDING
    assert RegistrationRequest.objects.get(pk=decided_old.pk).state == RequestState.DENIED
    assert _actions(old[0]) == ["request.lapse"]
    assert request_lapse_due() == 0


def test_sweep_lapsed_task(make_request):
    from approvals.tasks import sweep_lapsed

    req = make_request()
    RegistrationRequest.objects.filter(pk=req.pk).update(created_at=timezone.now() - timedelta(days=60))
    assert sweep_lapsed.name == "approvals.tasks.sweep_lapsed"
    assert sweep_lapsed() == 1
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.LAPSED


# --- concurrency (real PostgreSQL row locks, two connections) ---------------------------------


def _race(fn_a, fn_b):
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(name, fn):
        try:
            barrier.wait(timeout=10)
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - the outcome is what we assert on
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=("a", fn_a)), threading.Thread(target=run, args=("b", fn_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_on_high_tier(make_request, approver, approver2):
    req = make_request("high")
    results = _race(
        lambda: request_approve(reg_request=RegistrationRequest.objects.get(pk=req.pk), approver=approver, reason="a"),
        lambda: request_approve(reg_request=RegistrationRequest.objects.get(pk=req.pk), approver=approver2, reason="b"),
    )
    assert not any(isinstance(r, Exception) for r in results.values()), results
    fresh = RegistrationRequest.objects.get(pk=req.pk)
    assert fresh.state == RequestState.APPROVED
    assert Client.objects.filter(registration_id=req.public_id).count() == 1
    assert Decision.objects.filter(request=req, kind=DecisionKind.APPROVE).count() == 2
    assert sorted(_actions(req)) == ["request.approve", "request.approved"]


@pytest.mark.django_db(transaction=True)
def test_approve_and_deny_at_once_give_one_outcome(make_request, approver, approver2):
    req = make_request("medium")
    results = _race(
        lambda: request_approve(reg_request=RegistrationRequest.objects.get(pk=req.pk), approver=approver, reason="a"),
        lambda: request_deny(reg_request=RegistrationRequest.objects.get(pk=req.pk), approver=approver2, reason="b"),
    )
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], DecisionConflict), results
    fresh = RegistrationRequest.objects.get(pk=req.pk)
    assert Decision.objects.filter(request=req).count() == 1
    if fresh.state == RequestState.APPROVED:
        assert Client.objects.filter(registration_id=req.public_id).count() == 1
    else:
        assert fresh.state == RequestState.DENIED
        assert not Client.objects.filter(registration_id=req.public_id).exists()
    assert len(_actions(req)) == 1


@pytest.mark.django_db(transaction=True)
def test_same_approver_twice_at_once_counts_once(make_request, approver):
    req = make_request("high")
    results = _race(
        lambda: request_approve(reg_request=RegistrationRequest.objects.get(pk=req.pk), approver=approver, reason="a"),
        lambda: request_approve(reg_request=RegistrationRequest.objects.get(pk=req.pk), approver=approver, reason="a"),
    )
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], DecisionConflict), results
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.PENDING
    assert Decision.objects.filter(request=req).count() == 1


def test_sweep_lapsed_command(make_request):
    from io import StringIO

    from django.core.management import call_command

    req = make_request()
    RegistrationRequest.objects.filter(pk=req.pk).update(created_at=timezone.now() - timedelta(days=60))
    out = StringIO()
    call_command("sweep", "lapsed", stdout=out)
    assert "lapsed=1" in out.getvalue()
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.LAPSED


def test_role_is_checked_before_state(medium_request, approver, security_user, owner):
    request_deny(reg_request=medium_request, approver=approver, reason="no")
    with pytest.raises(DecisionForbidden):  # not 409: a non-approver learns nothing about the request
        request_approve(reg_request=medium_request, approver=security_user, reason="x")
    with pytest.raises(DecisionForbidden):
        request_deny(reg_request=medium_request, approver=owner, reason="x")


@pytest.mark.django_db
def test_the_four_eyes_path_marks_the_client_it_creates_two_person_approved(make_request, approver, approver2):
    """Client.two_person_approved (approvals.approval_flags), kept by the database: the framework report's
    "Human approval for high tier" control counts the clients without it."""
    request = make_request("high")
    request_approve(reg_request=request, approver=approver, reason="ok")
    request.refresh_from_db()
    request_approve(reg_request=request, approver=approver2, reason="ok too")
    assert Client.objects.values_list("two_person_approved", flat=True).get(registration_id=request.public_id)
    single = make_request("medium")
    request_approve(reg_request=single, approver=approver, reason="ok")
    assert not Client.objects.values_list("two_person_approved", flat=True).get(registration_id=single.public_id)
