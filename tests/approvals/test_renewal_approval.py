"""A renewal request, once approved, extends the existing client; it never creates a second one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.choices import RequestKind, RequestState
from approvals.models import RegistrationRequest
from approvals.services import DecisionConflict, request_approve
from inventory.choices import ClientState, RiskTier
from inventory.lifecycle import client_renew, client_transition
from inventory.models import Client
from portal.audit import Actor
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def high_client(idp, owner):
    return ClientFactory(
        idp=idp,
        owner=owner,
        risk_tier=RiskTier.HIGH,
        scopes=["repo:write"],
        expires_at=timezone.now() + timedelta(hours=1),
    )


def test_approved_renewal_extends_the_same_client(high_client, owner, approver, approver2):
    result = client_renew(client=high_client, user=owner, ttl_seconds=20 * 3600)
    renewal = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL, client=high_client)
    assert renewal.state == RequestState.PENDING and result is not None
    before_expiry = Client.objects.get(pk=high_client.pk).expires_at

    request_approve(reg_request=renewal, approver=approver, reason="still needed for releases")
    renewal.refresh_from_db()
    assert renewal.state == RequestState.PENDING  # high tier: needs a second approver
    request_approve(reg_request=renewal, approver=approver2, reason="confirmed with the team")

    renewal.refresh_from_db()
    high_client.refresh_from_db()
    assert renewal.state == RequestState.APPROVED
    assert Client.objects.count() == 1
    assert high_client.expires_at > before_expiry + timedelta(hours=10)
    assert high_client.renewals == 1 and high_client.state == ClientState.ACTIVE


def test_renewal_of_a_client_that_ended_meanwhile_is_refused(high_client, owner, approver, approver2):
    client_renew(client=high_client, user=owner, ttl_seconds=3600)
    renewal = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL)
    client_transition(client=high_client, target=ClientState.RETIRED, actor=Actor.system("test"))
    request_approve(reg_request=renewal, approver=approver, reason="ok")
    with pytest.raises(DecisionConflict, match="cannot renew"):
        request_approve(reg_request=renewal, approver=approver2, reason="ok")
    renewal.refresh_from_db()
    assert renewal.state == RequestState.PENDING
    assert Client.objects.get().state == ClientState.RETIRED
