"""The owner quota (max_live_clients_per_owner) on every path that makes a client live, in one process.

The concurrent versions of these (bursts over HTTP against a multi-process server) are in tests/races/; these
pin the rule itself: the count that decides is the one taken under the owner's lock in the transaction that
creates the client, a refusal names the limit and its figure, and a refusal consumes and records nothing but
its own refused row.
"""

from __future__ import annotations

import pytest

from approvals.choices import RequestState
from approvals.models import Decision, RegistrationRequest
from approvals.oauth2 import credentials, register
from approvals.policy_store import policy_publish
from approvals.services import DecisionConflict, request_approve
from inventory.choices import ClientState
from inventory.models import Client
from inventory.quotas import OwnerQuotaExceeded, owner_quota_hold
from portal.audit import Actor, events_for
from portal.models import AuditEvent
from tests.approvals.intake_support import _fresh_limits_and_policy, counts, low_body, make_token  # noqa: F401
from tests.factories import ClientFactory

QUOTA = 2


@pytest.fixture
def quota(db, admin_user):
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_live_clients_per_owner": QUOTA})
    return QUOTA


def _live(owner) -> int:
    return Client.objects.live().filter(owner=owner).count()


# --- intake: the count under the lock decides ---------------------------------------------------------------


def test_intake_recounts_under_the_owner_lock_and_refuses_what_the_early_count_let_through(
    catalogue, idp, owner, quota
):
    """What a concurrent registration does to the early count: it said 1 live, by commit time there are 2."""
    token, plaintext = make_token(owner)
    ClientFactory(owner=owner, idp=idp)
    requester = credentials.requester_authenticate(bearer=plaintext, body={})
    ClientFactory(owner=owner, idp=idp)  # committed by someone else after the credential was looked up
    assert requester.owner_live_clients == 1
    before = counts()

    submission = register.registration_submit(requester=requester, body=low_body())

    assert submission.refused and submission.client is None
    assert submission.error == "invalid_client_metadata"
    assert submission.error_description.endswith("the owner already has 2 live clients; the limit is 2")
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    refused = RegistrationRequest.objects.latest("pk")
    assert refused.state == RequestState.REFUSED and [r["code"] for r in refused.reasons] == ["owner_over_quota"]
    assert AuditEvent.objects.latest("id").action == "registration.refused"
    token.refresh_from_db()
    assert token.uses == 0  # a refusal consumes nothing
    assert _live(owner) == 2


def test_intake_below_quota_is_created(catalogue, idp, owner, quota):
    _, plaintext = make_token(owner)
    ClientFactory(owner=owner, idp=idp)
    submission = register.registration_submit(
        requester=credentials.requester_authenticate(bearer=plaintext, body={}), body=low_body()
    )
    assert not submission.refused and submission.client is not None
    assert _live(owner) == 2


def test_spawned_children_count_towards_the_parents_owner(client, catalogue, idp, owner, quota):
    """A parent's registration access token spawns a child of the same owner: it needs room in their quota."""
    _, plaintext = make_token(owner)
    response = client.post(
        "/oauth2/register", low_body(), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}"
    )
    assert response.status_code == 201
    parent_token = response.json()["registration_access_token"]
    spawn = client.post(
        "/oauth2/register",
        low_body(client_name="child"),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {parent_token}",
    )
    assert spawn.status_code == 201, spawn.content
    assert _live(owner) == 2
    refused = client.post(
        "/oauth2/register",
        low_body(client_name="third"),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {parent_token}",
    )
    assert refused.status_code == 400
    assert refused.json()["error_description"].endswith("the owner already has 2 live clients; the limit is 2")
    assert _live(owner) == 2


# --- the last human approval --------------------------------------------------------------------------------


def test_final_approval_at_quota_is_refused_and_the_request_stays_pending(make_request, approver, owner, idp, quota):
    ClientFactory(owner=owner, idp=idp)
    ClientFactory(owner=owner, idp=idp)
    req = make_request()
    audit_before = AuditEvent.objects.count()

    with pytest.raises(DecisionConflict) as refused:
        request_approve(reg_request=req, approver=approver, reason="looks fine")

    assert refused.value.status_code == 409
    assert str(refused.value).startswith(
        "cannot approve yet: the owner already has 2 live clients; the limit is 2 (max_live_clients_per_owner)"
    )
    assert "stays pending" in str(refused.value)
    fresh = RegistrationRequest.objects.get(pk=req.pk)
    assert fresh.state == RequestState.PENDING and fresh.client_id is None
    assert not Decision.objects.filter(request=req).exists()  # the refused approval is not counted either
    assert AuditEvent.objects.count() == audit_before
    assert _live(owner) == 2

    # once the owner has room, the same approval goes through
    Client.objects.filter(owner=owner).update(state=ClientState.RETIRED)
    request_approve(reg_request=req, approver=approver, reason="looks fine")
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.APPROVED
    assert _live(owner) == 1


def test_high_risk_first_approval_is_recorded_and_only_the_second_meets_the_quota(
    high_request, approver, approver2, owner, idp, quota
):
    ClientFactory(owner=owner, idp=idp)
    ClientFactory(owner=owner, idp=idp)
    request_approve(reg_request=high_request, approver=approver, reason="first look")  # creates nothing yet
    with pytest.raises(DecisionConflict, match="the limit is 2"):
        request_approve(reg_request=high_request, approver=approver2, reason="second look")
    fresh = RegistrationRequest.objects.get(pk=high_request.pk)
    assert fresh.state == RequestState.PENDING and fresh.client_id is None
    assert list(Decision.objects.filter(request=high_request).values_list("approver", flat=True)) == [approver.pk]
    assert list(events_for("registration_request", high_request.public_id).values_list("action", flat=True)) == [
        "request.approve"
    ]


# --- the lock itself ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_quota_hold_needs_the_callers_transaction(owner):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        owner_quota_hold(owner_id=owner.pk, limit=5)


@pytest.mark.django_db(transaction=True)
def test_quota_hold_counts_live_clients_only_and_names_the_figure(owner, idp):
    from django.db import transaction

    ClientFactory(owner=owner, idp=idp)
    ClientFactory(owner=owner, idp=idp, state=ClientState.SUSPENDED)  # still holds credentials: counts
    ClientFactory(owner=owner, idp=idp, state=ClientState.RETIRED)  # ended: does not
    with transaction.atomic():
        assert owner_quota_hold(owner_id=owner.pk, limit=3) == 2
        with pytest.raises(OwnerQuotaExceeded) as info:
            owner_quota_hold(owner_id=owner.pk, limit=3, adding=2)
    assert (info.value.live, info.value.limit) == (2, 3)
    assert str(info.value) == "the owner already has 2 live clients; the limit is 3 (max_live_clients_per_owner)"
    assert info.value.describe("you") == "you already have 2 live clients; the limit is 3 (max_live_clients_per_owner)"


def test_the_review_page_says_why_an_approval_at_quota_was_refused(client, make_request, approver, owner, idp, quota):
    from django.urls import reverse

    ClientFactory(owner=owner, idp=idp)
    ClientFactory(owner=owner, idp=idp)
    req = make_request()
    client.force_login(approver)
    response = client.post(reverse("approvals:decide", args=[req.public_id]), {"decision": "approve", "reason": "ok"})
    assert response.status_code == 409
    assert (
        "the owner already has 2 live clients; the limit is 2 (max_live_clients_per_owner)" in response.content.decode()
    )
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.PENDING
