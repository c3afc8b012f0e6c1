"""seed_demo and mint_access_token, as a user runs them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.utils import timezone

from approvals.models import InitialAccessToken, RegistrationRequest
from inventory.choices import ClientState
from inventory.models import Client, IdPConnection, ScopeDefinition
from portal.audit import verify_chain
from portal.crypto import hash_token
from portal.roles import roles_of

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_people_catalogue_and_every_state(django_user_model):
    out = StringIO()
    call_command("seed_demo", "--password", "demo-pass-123", stdout=out)
    for username, role in [
        ("admin", "admin"),
        ("alice", "owner"),
        ("dave", "owner"),
        ("bob", "approver"),
        ("carol", "approver"),
        ("ciso", "security"),
    ]:
        user = authenticate(username=username, password="demo-pass-123")
        assert user is not None, username
        assert role in roles_of(user)
    assert set(ScopeDefinition.objects.values_list("sensitivity", flat=True)) == {"low", "medium", "high"}
    assert set(Client.objects.values_list("state", flat=True)) == set(ClientState.values)
    assert IdPConnection.objects.filter(is_default=True).count() == 1
    assert verify_chain()[1] is None
    # idempotent
    pending = RegistrationRequest.objects.filter(state="pending", kind="registration")
    assert sorted(pending.values_list("risk_tier", flat=True)) == ["high", "medium", "medium"]
    assert all(r.token_id and r.owner.username == "alice" for r in pending)
    # the anonymous MCP profile's demo registrations: 4 submitted, 2 clients (the repeated one coalesced twice),
    # and 3 duplicates registered before coalescing (the DCR-debt view's demo group)
    anonymous = Client.objects.filter(created_via="anonymous")
    assert anonymous.count() == 5 and RegistrationRequest.objects.filter(via="anonymous").count() == 5
    from approvals.dcr_debt import dcr_debt

    assert dcr_debt().duplicates == 2
    assert sum(RegistrationRequest.objects.values_list("coalesced_count", flat=True)) == 2
    call_command("seed_demo", "--password", "demo-pass-123", stdout=StringIO())
    assert Client.objects.count() == 15  # 9 demo clients, the CIMD client, 5 anonymous MCP clients
    assert pending.count() == 3
    assert anonymous.count() == 5
    assert RegistrationRequest.objects.filter(state="pending", kind="cimd_change").count() == 1


def test_seed_demo_has_a_cimd_client_with_its_pinned_document_and_a_pending_change():
    from approvals.models import CimdPin

    out = StringIO()
    call_command("seed_demo", "--password", "demo-pass-123", stdout=out)
    pin = CimdPin.objects.select_related("client", "change_request").get()
    assert pin.client.created_via == "cimd" and pin.client.metadata["client_id"] == pin.url
    assert pin.document["redirect_uris"] == ["https://desk.example.com/oauth/callback"]
    change = pin.change_request
    assert change.state == "pending" and change.kind == "cimd_change" and change.client_id == pin.client_id
    assert any("adds redirect hosts desk-partner.example.net" in r["message"] for r in change.reasons)
    assert f"CIMD client {pin.client.registration_id}" in out.getvalue()


def test_under_make_run_the_cimd_document_is_really_served_and_fetched(settings, tmp_path):
    """rundemo's document host (HTTPS on loopback, a demo CA): seed_demo serves the vendor's current document there,
    and the drift check fetches it through the safe fetcher (trusting that CA, loopback allowed as in embedded
    mode) and finds the change already waiting — not filed twice, not flagged unreachable."""
    from approvals.cimd.pinning import pin_check
    from approvals.models import CimdPin
    from portal import safefetch
    from portal.management.demo_documents import DocumentHost, set_active_host

    host = DocumentHost(tmp_path / "docs").start()
    set_active_host(host)
    try:
        call_command("seed_demo", "--password", "demo-pass-123", stdout=StringIO())
        pin = CimdPin.objects.get()
        assert pin.url == host.base_url + "/desk/oauth/client.json"
        assert pin.next_check_at <= timezone.now()  # the worker checks it at once
        settings.REGISTRAR_FETCH_CA_FILE = str(host.ca_file)
        settings.REGISTRAR_FETCH_ALLOW_LOOPBACK = True
        original = safefetch.resolve
        safefetch.resolve = lambda name, port: ["127.0.0.1"] if name == "localhost" else original(name, port)
        try:
            result = pin_check(pin_id=pin.pk)
        finally:
            safefetch.resolve = original
    finally:
        set_active_host(None)
        host.stop()
    assert result.result == "widening" and result.action == ""  # the change it found already waits
    pin.refresh_from_db()
    assert pin.last_result == "widening" and pin.unreachable_since is None
    assert RegistrationRequest.objects.filter(kind="cimd_change", state="pending").count() == 1


def test_seed_demo_shows_attestation_due_a_sponsor_short_and_reported_use():
    from inventory.models import ComplianceIssue, LifecyclePolicy

    out = StringIO()
    call_command("seed_demo", "--password", "demo-pass-123", stdout=out)
    assert "lifecycle policy v1 (monitor only)" in out.getvalue()
    assert LifecyclePolicy.objects.get().monitor_only
    open_issues = set(
        ComplianceIssue.objects.filter(resolved_at__isnull=True).values_list("client__owner__username", "rule")
    )
    assert {("alice", "attestation"), ("dave", "attestation"), ("dave", "sponsors")} <= open_issues
    assert Client.objects.get(name="refund-assistant").last_used_at is not None


def test_seed_demo_generates_and_prints_a_password_when_none_given(settings):
    settings.REGISTRAR_DEMO_PASSWORD = None
    out = StringIO()
    call_command("seed_demo", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("generated password"))
    assert authenticate(username="bob", password=line.split(": ", 1)[1]) is not None


def test_mint_access_token_prints_only_the_token():
    call_command("seed_demo", "--password", "demo-pass-123", stdout=StringIO())
    out = StringIO()
    call_command(
        "mint_access_token",
        "--owner",
        "alice",
        "--purpose",
        "CI agents",
        "--scopes",
        "tickets:read docs:read",
        "--ttl",
        "3600",
        "--max-uses",
        "3",
        "--internal-only",
        stdout=out,
    )
    token = out.getvalue().strip()
    assert "\n" not in token and token.startswith("rat_")
    row = InitialAccessToken.objects.get(token_hash=hash_token(token))
    assert (row.owner.username, row.purpose, row.allowed_scopes) == (
        "alice",
        "CI agents",
        ["docs:read", "tickets:read"],
    )
    assert (row.max_ttl_seconds, row.max_uses, row.internal_only) == (3600, 3, True)
    assert token not in str(InitialAccessToken.objects.values_list())  # only the hash is stored


@pytest.mark.parametrize(
    "args,message",
    [
        (["--owner", "nobody"], "no such user"),
        (["--owner", "alice", "--scopes", "made:up"], "unknown scope"),
        (["--owner", "alice", "--ttl", "5"], "max TTL"),
    ],
)
def test_mint_access_token_refuses_bad_input_and_writes_nothing(args, message):
    call_command("seed_demo", "--password", "demo-pass-123", stdout=StringIO())
    before = InitialAccessToken.objects.count()
    base = {"--owner": "alice", "--purpose": "x bot", "--scopes": "tickets:read", "--ttl": "3600"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [item for pair in base.items() for item in pair]
    with pytest.raises(CommandError, match=message):
        call_command("mint_access_token", *argv, stdout=StringIO())
    assert InitialAccessToken.objects.count() == before
