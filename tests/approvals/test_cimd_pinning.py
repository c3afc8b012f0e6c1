"""Pinning and drift of CIMD clients (approvals.cimd.pinning) against a local HTTPS document host: an approval
pins the document; a re-fetch that is the same does nothing, one that narrows is applied through the lifecycle,
one that widens goes to review while the client keeps the pinned version, and a document that stops answering
is flagged and, after the grace period, the client is suspended."""

# ruff: noqa: F811 - the fixtures imported from tests.https_host are test parameters here

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

from approvals.choices import RequestKind, RequestState
from approvals.cimd.pinning import pin_check, pins_check_due
from approvals.models import CimdPin, RegistrationRequest
from approvals.oauth2.inline_delivery import deliver_inline
from approvals.preregistration import preregister
from approvals.services import DecisionForbidden, request_approve
from inventory.choices import ClientState, CreatedVia, HoldKind, OutboxOperation
from inventory.models import Client, OutboxEntry
from portal.models import AuditEvent
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401 - autouse fixture
from tests.https_host import https_host, loopback_fetches  # noqa: F401

pytestmark = pytest.mark.django_db

PATH = "/oauth/client.json"
CB = "https://app.example.test/callback"
CB2 = "https://app.example.test/second"


@pytest.fixture(autouse=True)
def _setup(catalogue, idp):
    cache.clear()
    yield
    cache.clear()


def serve(https_host, **changes) -> tuple[str, str]:
    url = https_host.url(PATH, host="app.example.test")
    document = {
        "client_id": url,
        "client_name": "Desk Agent",
        "redirect_uris": [CB, CB2],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **changes,
    }
    body = json.dumps(document).encode()
    https_host.serve(PATH, body, headers={"Cache-Control": "max-age=600"})
    return url, hashlib.sha256(body).hexdigest()


@pytest.fixture
def pinned(owner, approver, loopback_fetches, https_host):
    """An approved, active CIMD client and its pin."""
    url, sha = serve(https_host)
    done = preregister(submitter=owner, cimd_url=url, governance={"purpose": "Service desk assistant"})
    request_approve(reg_request=done.reg_request, approver=approver, reason="known vendor")
    client = Client.objects.get()
    assert deliver_inline(client)
    pin = CimdPin.objects.get()
    assert pin.client_id == client.pk and pin.sha256 == sha and pin.url == url
    return pin


def test_an_approval_pins_the_document(pinned):
    client = Client.objects.get()
    assert client.created_via == CreatedVia.CIMD and client.state == ClientState.ACTIVE
    assert client.idp_client_id == pinned.url  # the IdP knows a CIMD client by its document URL
    assert pinned.document["redirect_uris"] == [CB, CB2] and pinned.keys is None
    assert client.metadata["redirect_uris"] == [CB, CB2]


def test_the_same_document_changes_nothing(pinned):
    before = AuditEvent.objects.count(), OutboxEntry.objects.count()
    result = pin_check(pin_id=pinned.pk)
    assert (result.result, result.action) == ("same", "")
    assert (AuditEvent.objects.count(), OutboxEntry.objects.count()) == before
    pin = CimdPin.objects.get()
    assert pin.last_result == "same" and pin.last_fetched_at is not None
    assert pin.next_check_at - pin.last_fetched_at == timedelta(seconds=600)  # its Cache-Control, within bounds


def test_a_narrowing_document_is_applied_through_the_lifecycle(pinned, https_host):
    _, new_sha = serve(https_host, redirect_uris=[CB])
    outbox_before = OutboxEntry.objects.filter(operation=OutboxOperation.UPDATE).count()
    result = pin_check(pin_id=pinned.pk)
    assert (result.result, result.action) == ("narrowing", "applied")
    client = Client.objects.get()
    assert client.metadata["redirect_uris"] == [CB]
    assert OutboxEntry.objects.filter(operation=OutboxOperation.UPDATE).count() == outbox_before + 1
    event = AuditEvent.objects.filter(action="client.narrow", object_id=client.registration_id).get()
    assert "removes redirect URIs " + CB2 in event.reason
    pin = CimdPin.objects.get()
    assert pin.sha256 == new_sha and pin.document["redirect_uris"] == [CB]


def test_a_widening_document_goes_to_review_and_the_client_keeps_the_pinned_one(pinned, https_host, owner, approver2):
    _, new_sha = serve(https_host, redirect_uris=[CB, "https://evil.example.test/cb"])
    old_sha = pinned.sha256
    result = pin_check(pin_id=pinned.pk)
    assert (result.result, result.action) == ("widening", "change_requested")
    change = RegistrationRequest.objects.get(kind=RequestKind.CIMD_CHANGE)
    client = Client.objects.get()
    assert change.state == RequestState.PENDING and change.client_id == client.pk and change.cimd_sha256 == new_sha
    assert any("adds redirect hosts evil.example.test" in r["message"] for r in change.reasons)
    assert client.metadata["redirect_uris"] == [CB, CB2]  # still the pinned version
    pin = CimdPin.objects.get()
    assert pin.sha256 == old_sha and pin.change_request_id == change.pk
    assert '+    "https://evil.example.test/cb"' in pin.last_diff
    assert AuditEvent.objects.filter(action="cimd.change_requested", object_id=change.public_id).count() == 1

    # checked again: no second request for the same change
    assert pin_check(pin_id=pinned.pk).action == ""
    assert RegistrationRequest.objects.filter(kind=RequestKind.CIMD_CHANGE).count() == 1

    # the owner is a party to it; another approver applies it and it is pinned
    with pytest.raises(DecisionForbidden):
        request_approve(reg_request=change, approver=owner, reason="mine")
    request_approve(reg_request=change, approver=approver2, reason="new callback host agreed")
    client.refresh_from_db()
    assert client.metadata["redirect_uris"] == [CB, "https://evil.example.test/cb"]
    assert client.scopes == []
    pin = CimdPin.objects.get()
    assert pin.sha256 == new_sha
    assert AuditEvent.objects.filter(action="client.cimd_change", object_id=client.registration_id).count() == 1
    assert pin_check(pin_id=pinned.pk).result == "same"


def test_a_widening_of_a_high_risk_client_needs_four_eyes(pinned, https_host, approver2):
    Client.objects.update(risk_tier="high")
    serve(https_host, redirect_uris=[CB, "https://other.example.test/cb"])
    pin_check(pin_id=pinned.pk)
    change = RegistrationRequest.objects.get(kind=RequestKind.CIMD_CHANGE)
    assert change.risk_tier == "high" and change.approvals_needed == 2
    request_approve(reg_request=change, approver=approver2, reason="one")
    assert RegistrationRequest.objects.get(pk=change.pk).state == RequestState.PENDING
    assert Client.objects.get().metadata["redirect_uris"] == [CB, CB2]


def test_an_unreachable_document_is_flagged_then_the_client_suspended_after_the_grace(pinned, https_host):
    https_host.serve(PATH, b"{}", status=503)
    start = timezone.now()
    first = pin_check(pin_id=pinned.pk, now=start)
    assert (first.result, first.action) == ("refused", "flagged")
    pin = CimdPin.objects.get()
    assert pin.unreachable_since == start and pin.last_error.startswith("status:")
    assert AuditEvent.objects.filter(action="cimd.unreachable").count() == 1

    assert pin_check(pin_id=pinned.pk, now=start + timedelta(hours=71)).action == ""
    assert Client.objects.get().state == ClientState.ACTIVE
    assert AuditEvent.objects.filter(action="cimd.unreachable").count() == 1  # flagged once

    assert pin_check(pin_id=pinned.pk, now=start + timedelta(hours=72)).action == "suspended"
    client = Client.objects.get()
    assert client.state == ClientState.SUSPENDED and client.hold_kind == HoldKind.POLICY
    assert "unusable since" in client.hold_reason
    assert AuditEvent.objects.filter(action="client.suspend", object_id=client.registration_id).count() == 1
    assert OutboxEntry.objects.filter(client=client, operation=OutboxOperation.DISABLE).exists()

    # it answers again: the flag goes, the hold stays for a person to lift
    serve(https_host)
    again = pin_check(pin_id=pinned.pk, now=start + timedelta(hours=73))
    assert (again.result, again.action) == ("same", "recovered")
    assert CimdPin.objects.get().unreachable_since is None
    assert Client.objects.get().state == ClientState.SUSPENDED


def test_the_grace_period_is_a_setting(pinned, https_host, settings):
    settings.REGISTRAR_CIMD_UNREACHABLE_GRACE_HOURS = 1
    https_host.serve(PATH, b"{}", status=404)
    start = timezone.now()
    pin_check(pin_id=pinned.pk, now=start)
    assert pin_check(pin_id=pinned.pk, now=start + timedelta(hours=1)).action == "suspended"


def test_only_due_pins_are_checked_by_the_sweep(pinned, https_host):
    hits = https_host.hits(PATH)
    assert pins_check_due(now=timezone.now()) == {}
    assert https_host.hits(PATH) == hits
    counts = pins_check_due(now=pinned.next_check_at)
    assert counts == {"same": 1} and https_host.hits(PATH) == hits + 1


def test_the_sweep_command_runs_it(pinned, https_host, capsys):
    CimdPin.objects.update(next_check_at=timezone.now() - timedelta(seconds=1))
    call_command("sweep", "cimd_drift")
    assert "sweep=cimd_drift same=1" in capsys.readouterr().out


def test_the_explain_page_and_the_approver_show_the_pin_and_the_pending_diff(
    pinned, https_host, client, security_user, approver2
):
    serve(https_host, redirect_uris=[CB, "https://evil.example.test/cb"])
    pin_check(pin_id=pinned.pk)
    change = RegistrationRequest.objects.get(kind=RequestKind.CIMD_CHANGE)
    registration_id = Client.objects.get().registration_id
    client.force_login(security_user)
    page = client.get(f"/inventory/{registration_id}/").content.decode()
    assert pinned.sha256 in page and pinned.url in page
    assert f"<code>{change.public_id}</code></a> waits for review" in page
    assert "+    &quot;https://evil.example.test/cb&quot;" in page
    assert "adds redirect hosts evil.example.test" in page

    client.force_login(approver2)
    detail = client.get(f"/approvals/{change.public_id}/").content.decode()
    assert "Change against the pinned document" in detail
    assert "+    &quot;https://evil.example.test/cb&quot;" in detail


def test_the_change_waits_in_the_review_queue(pinned, https_host, client, approver2):
    serve(https_host, redirect_uris=[CB, "https://evil.example.test/cb"])
    pin_check(pin_id=pinned.pk)
    change = RegistrationRequest.objects.get(kind=RequestKind.CIMD_CHANGE)
    client.force_login(approver2)
    page = client.get("/approvals/").content.decode()
    assert change.public_id in page
