"""Approved ceilings stick: a renewal never gives a client more than its last approval granted.

Regressions (issue 13): an approver narrowed a client to 1 hour and the owner's one-click Renew then gave it
7 days with no review, again and again; on renewal requests an approver's scope narrowing was dropped.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from approvals.choices import RequestKind, RequestState
from approvals.models import RegistrationRequest
from approvals.policy import Verdict
from approvals.policy_store import policy_publish
from approvals.services import DecisionInvalid, request_approve
from inventory.choices import ClientState, OutboxOperation, RiskTier
from inventory.lifecycle import LifecycleError, client_apply_renewal, client_renew, client_transition
from inventory.models import Client, OutboxEntry
from portal.audit import Actor
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    low_body,
    make_token,
    post,
)
from tests.factories import ClientFactory, RequestFactory

pytestmark = pytest.mark.django_db
HOUR = 3600


def _activate(client: Client) -> Client:
    client_transition(client=client, target=ClientState.ACTIVE, actor=Actor.system("test"), push_to_idp=False)
    return Client.objects.get(pk=client.pk)


@pytest.fixture
def narrowed_medium(client, catalogue, idp, owner, approver):
    """A medium-tier client that asked for 7 days; its approver granted 1 hour."""
    _, plaintext = make_token(owner)
    response = post(client, low_body(scope="tickets:write", internal_only=False, requested_ttl=7 * 86400), plaintext)
    assert response.status_code == 202, response.content
    request = RegistrationRequest.objects.get(public_id=response.json()["registration_id"])
    request_approve(reg_request=request, approver=approver, reason="an hour is enough", ttl_seconds=HOUR)
    return _activate(Client.objects.get(registration_id=request.public_id))


@pytest.fixture
def narrowed_high(client, catalogue, idp, owner, approver, approver2):
    """A high-tier client with two scopes whose two approvers granted 1 hour."""
    _, plaintext = make_token(owner)
    response = post(client, low_body(scope="repo:write tickets:read", requested_ttl=86400), plaintext)
    assert response.status_code == 202, response.content
    request = RegistrationRequest.objects.get(public_id=response.json()["registration_id"])
    request_approve(reg_request=request, approver=approver, reason="ok for an hour", ttl_seconds=HOUR)
    request_approve(reg_request=request, approver=approver2, reason="agreed")
    return _activate(Client.objects.get(registration_id=request.public_id))


def test_one_click_renew_keeps_the_lifetime_the_approver_granted(client, narrowed_medium, owner):
    """Regression: Renew gave the approver-narrowed client the 7-day tier ceiling, with no review."""
    client.force_login(owner)
    for _ in range(3):  # "and can repeat forever"
        before = timezone.now()
        response = client.post(f"/inventory/mine/{narrowed_medium.registration_id}/renew/")
        assert response.status_code == 302
        renewed = Client.objects.get(pk=narrowed_medium.pk)
        assert renewed.expires_at <= timezone.now() + timedelta(seconds=HOUR)
        assert renewed.expires_at >= before + timedelta(seconds=HOUR)
    assert renewed.renewals == 3
    assert not RegistrationRequest.objects.filter(kind=RequestKind.RENEWAL).exists()


def test_renewing_beyond_the_approved_lifetime_needs_a_new_approval(narrowed_medium, owner, approver):
    expires = narrowed_medium.expires_at
    outcome = client_renew(client=narrowed_medium, user=owner, ttl_seconds=7 * 86400, reason="a week please")
    assert outcome.needs_review and not outcome.renewed
    assert Client.objects.get(pk=narrowed_medium.pk).expires_at == expires
    renewal = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL, state=RequestState.PENDING)
    assert (renewal.requested_ttl, renewal.approvals_needed, renewal.risk_tier) == (7 * 86400, 1, RiskTier.MEDIUM)
    assert [r["code"] for r in renewal.reasons] == ["beyond_approved_ttl"]
    assert Verdict.from_dict(renewal.verdict).tier == RiskTier.MEDIUM  # readable like any policy verdict
    assert "asks for 7d; the last approval granted 1h per renewal" in renewal.reasons[0]["message"]
    event = AuditEvent.objects.filter(action="client.renewal_requested").get()
    assert event.after["ceiling"]["ttl_seconds"] == HOUR and event.after["approvals_needed"] == 1

    request_approve(reg_request=renewal, approver=approver, reason="a week is fine now")
    renewed = Client.objects.get(pk=narrowed_medium.pk)
    assert renewed.ceiling_ttl_seconds == 7 * 86400  # the new approval is the new ceiling
    assert renewed.expires_at > timezone.now() + timedelta(days=6)


def test_high_tier_renewal_asks_for_the_approved_hour_and_needs_the_tiers_approvers(narrowed_high, owner):
    """Regression: the high-tier renewal request asked for the 24-hour tier ceiling, not what was approved."""
    outcome = client_renew(client=narrowed_high, user=owner)
    assert outcome.needs_review
    renewal = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL)
    assert renewal.requested_ttl == HOUR
    assert renewal.approvals_needed == 2
    assert [r["code"] for r in renewal.reasons] == ["high_tier_renewal"]


def test_renewal_approvals_follow_the_policy_for_the_tier(narrowed_high, owner, admin_user):
    policy_publish(actor=Actor.user(admin_user), thresholds={"approvals_medium": 2, "approvals_high": 3})
    client_renew(client=narrowed_high, user=owner)
    assert RegistrationRequest.objects.get(kind=RequestKind.RENEWAL).approvals_needed == 3


def test_an_approver_narrowing_scopes_on_a_renewal_narrows_the_client(narrowed_high, owner, approver, approver2):
    """Regression: granted_scopes of an approved renewal request were silently dropped."""
    assert sorted(narrowed_high.scopes) == ["repo:write", "tickets:read"]
    client_renew(client=narrowed_high, user=owner, reason="still needed")
    renewal = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL)
    request_approve(reg_request=renewal, approver=approver, reason="tickets only", scopes=["tickets:read"])
    request_approve(reg_request=renewal, approver=approver2, reason="agreed", ttl_seconds=1800)

    renewed = Client.objects.get(pk=narrowed_high.pk)
    assert renewed.scopes == ["tickets:read"]
    assert (renewed.ceiling_scopes, renewed.ceiling_ttl_seconds) == (["tickets:read"], 1800)
    assert renewed.expires_at <= timezone.now() + timedelta(seconds=1800)
    update = OutboxEntry.objects.filter(client=renewed, operation=OutboxOperation.UPDATE)
    assert update.count() == 1, "the narrower scopes must reach the IdP"
    event = AuditEvent.objects.get(action="client.renew.approved")
    assert event.after["narrowed_scopes"] == ["repo:write"] and event.after["ceiling"]["scopes"] == ["tickets:read"]


def test_renewal_approval_never_widens(narrowed_high, owner, approver):
    client_renew(client=narrowed_high, user=owner)
    renewal = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL)
    with pytest.raises(DecisionInvalid, match="only narrow"):
        request_approve(reg_request=renewal, approver=approver, reason="more", scopes=["repo:write", "crm:read"])
    with pytest.raises(DecisionInvalid, match="only shorten"):
        request_approve(reg_request=renewal, approver=approver, reason="longer", ttl_seconds=86400)
    with pytest.raises(LifecycleError, match="only narrow"):
        client_apply_renewal(
            client=narrowed_high, ttl_seconds=HOUR, actor=Actor.user(approver), scopes=["repo:write", "db:prod:read"]
        )
    with pytest.raises(LifecycleError, match="at least one scope"):
        client_apply_renewal(client=narrowed_high, ttl_seconds=HOUR, actor=Actor.user(approver), scopes=[])
    fresh = Client.objects.get(pk=narrowed_high.pk)
    assert (sorted(fresh.scopes), fresh.renewals) == (["repo:write", "tickets:read"], 0)


def test_policy_auto_approval_records_the_ceiling(client, catalogue, idp, owner):
    _, plaintext = make_token(owner)
    response = post(
        client,
        low_body(scope="tickets:read docs:read", requested_ttl=5400, audiences=["https://docs.internal"]),
        plaintext,
    )
    assert response.status_code == 201, response.content
    created = Client.objects.get(registration_id=response.json()["registration_id"])
    assert (sorted(created.ceiling_scopes), created.ceiling_ttl_seconds) == (["docs:read", "tickets:read"], 5400)
    assert created.ceiling_audiences == ["https://docs.internal"]


def test_a_client_nobody_approved_goes_to_review(owner):
    shadow = ClientFactory(owner=owner, ceiling_scopes=None, ceiling_ttl_seconds=None, ceiling_audiences=None)
    outcome = client_renew(client=shadow, user=owner)
    assert outcome.needs_review
    assert RegistrationRequest.objects.get().reasons[0]["code"] == "no_approved_ceiling"


def test_the_policy_tier_ceiling_still_caps_an_older_approval(owner, admin_user):
    client = ClientFactory(owner=owner, risk_tier=RiskTier.MEDIUM, ceiling_ttl_seconds=5 * 86400)
    policy_publish(actor=Actor.user(admin_user), thresholds={"medium_ttl_seconds": 86400})
    now = timezone.now()
    assert client_renew(client=client, user=owner, now=now).renewed
    assert Client.objects.get(pk=client.pk).expires_at == now + timedelta(days=1)


def test_backfill_migration_uses_the_approving_request_else_the_tier(owner):
    """approvals 0006: existing clients get the ceiling they already had in effect."""
    backfill = __import__("approvals.migrations.0008_backfill_client_ceilings", fromlist=["backfill"]).backfill
    approved = ClientFactory(owner=owner, scopes=["tickets:read"], audiences=["https://a"], risk_tier=RiskTier.MEDIUM)
    RequestFactory(client=approved, state="approved", granted_ttl=5400, decided_at=timezone.now())
    untraced = ClientFactory(owner=owner, risk_tier=RiskTier.MEDIUM)
    shadow = ClientFactory(owner=None, managed=False)
    Client.objects.update(ceiling_scopes=None, ceiling_ttl_seconds=None, ceiling_audiences=None)
    backfill(apps, None)
    rows = {c.pk: c for c in Client.objects.all()}
    assert (
        rows[approved.pk].ceiling_scopes,
        rows[approved.pk].ceiling_ttl_seconds,
        rows[approved.pk].ceiling_audiences,
    ) == (["tickets:read"], 5400, ["https://a"])
    assert rows[untraced.pk].ceiling_ttl_seconds == 7 * 86400
    assert rows[shadow.pk].ceiling_ttl_seconds is None and rows[shadow.pk].ceiling_scopes is None
