"""What the agent sees over RFC 7592 after approvers decide (or nobody does): the queue's half of the contract."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import RegistrationRequest
from approvals.services import request_approve, request_deny, request_lapse_due
from inventory.outbox.deliver import deliver_client_outbox
from tests.approvals.intake_support import _fresh_limits_and_policy, call, low_body, make_token, path_of, post

__all__ = ["_fresh_limits_and_policy"]  # autouse fixture: fresh rate limits and policy cache per test


@pytest.fixture
def pending(client, catalogue, idp, owner):
    _token, plaintext = make_token(owner)
    response = post(
        client, low_body(client_name="deploy-bot", scope="repo:write tickets:read", internal_only=False), plaintext
    )
    assert response.status_code == 202, response.content
    body = response.json()
    return {
        "uri": path_of(body["registration_client_uri"]),
        "token": body["registration_access_token"],
        "request": RegistrationRequest.objects.get(public_id=body["registration_id"]),
    }


def poll(client, pending):
    response = call(client, "GET", pending["uri"], pending["token"])
    pending["token"] = response.json().get("registration_access_token", pending["token"])
    return response


def test_poll_is_202_until_approved_and_provisioned_then_200(client, pending, approver, approver2):
    req = pending["request"]
    assert req.risk_tier == "high" and req.approvals_needed == 2
    assert poll(client, pending).status_code == 202
    request_approve(request=req, approver=approver, reason="ok")
    assert poll(client, pending).status_code == 202
    request_approve(request=req, approver=approver2, reason="ok too")
    assert poll(client, pending).status_code == 202  # approved, client provisioning at the IdP
    assert deliver_client_outbox(RegistrationRequest.objects.get(pk=req.pk).client_id)  # what the outbox worker does
    answer = poll(client, pending)
    assert answer.status_code == 200
    assert answer.json()["client_id"]
    assert set(answer.json()["scope"].split()) == {"repo:write", "tickets:read"}


def test_denied_poll_is_400(client, pending, approver):
    request_deny(request=pending["request"], approver=approver, reason="not justified")
    answer = poll(client, pending)
    assert answer.status_code == 400
    assert answer.json()["error"] == "access_denied"
    assert "not justified" in answer.json()["error_description"]


def test_lapsed_poll_is_400(client, pending):
    RegistrationRequest.objects.filter(pk=pending["request"].pk).update(created_at=timezone.now() - timedelta(days=30))
    assert request_lapse_due() == 1
    answer = poll(client, pending)
    assert answer.status_code == 400
    assert "lapsed" in answer.json()["error_description"]
