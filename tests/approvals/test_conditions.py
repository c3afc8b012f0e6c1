"""Context conditions: allowed source networks on an initial access token and on a trusted issuer, evaluated on
the real client address behind the configured trusted proxy (approvals.conditions). Refusals name the condition
and write nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from approvals.conditions import validate_networks
from approvals.models import InitialAccessToken, TrustedIssuer
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    call,
    counts,
    low_body,
    make_token,
    path_of,
    post,
)
from tests.approvals.test_statements import AUDIENCE, ISSUER, ISSUER_KEY, _jwks, sign

pytestmark = pytest.mark.django_db
INSIDE, OUTSIDE, PROXY = "10.1.2.3", "203.0.113.9", "127.0.0.1"


@pytest.fixture
def office_token(catalogue, idp, owner):
    return make_token(owner, allowed_networks=["10.0.0.0/8", "2001:db8::/32"])


@pytest.fixture
def ci_issuer(catalogue, idp, owner):
    return TrustedIssuer.objects.create(
        name="CI",
        kind="oidc",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=_jwks(ISSUER_KEY),
        subject="repo:acme/agents:*",
        owner=owner,
        purpose="CI agents of acme/agents",
        allowed_scopes=["tickets:read"],
        max_ttl_seconds=3600,
        internal_only=True,
        allowed_networks=["10.0.0.0/8"],
    )


def refused(response, error: str, *fragments: str) -> None:
    assert response.status_code == 403, response.content
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error
    for fragment in ("condition allowed_networks", *fragments):
        assert fragment in body["error_description"], body


def test_token_accepts_inside_refuses_outside_and_writes_nothing(client, office_token):
    token, plaintext = office_token
    before = counts()
    response = post(client, low_body(), plaintext, REMOTE_ADDR=OUTSIDE)
    refused(response, "access_denied", f"initial access token {token.prefix}", "10.0.0.0/8", OUTSIDE)
    assert counts() == before
    assert InitialAccessToken.objects.get(pk=token.pk).uses == 0
    assert post(client, low_body(), plaintext, REMOTE_ADDR=INSIDE).status_code == 201
    assert post(client, low_body(client_name="v6"), plaintext, REMOTE_ADDR="2001:db8::7").status_code == 201
    assert InitialAccessToken.objects.get(pk=token.pk).uses == 2


def test_a_spoofed_forwarded_header_is_ignored_without_a_trusted_proxy(client, office_token):
    _, plaintext = office_token
    before = counts()
    response = post(client, low_body(), plaintext, REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR=INSIDE)
    refused(response, "access_denied", OUTSIDE)
    assert counts() == before


@override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=1)
def test_behind_the_trusted_proxy_the_address_it_appended_counts(client, office_token):
    _, plaintext = office_token
    # The proxy appends the peer it saw; what the client wrote before it is not believed.
    spoofed = post(client, low_body(), plaintext, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{INSIDE}, {OUTSIDE}")
    refused(spoofed, "access_denied", OUTSIDE)
    accepted = post(client, low_body(), plaintext, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{OUTSIDE}, {INSIDE}")
    assert accepted.status_code == 201, accepted.content
    # Not through the proxy (no forwarded entry): the peer is the client.
    refused(post(client, low_body(), plaintext, REMOTE_ADDR=OUTSIDE), "access_denied", OUTSIDE)


def test_a_token_without_networks_is_unconditioned(client, catalogue, idp, owner):
    _, plaintext = make_token(owner)
    assert post(client, low_body(), plaintext, REMOTE_ADDR=OUTSIDE).status_code == 201


def test_trusted_issuer_networks_refuse_its_statements_from_outside(client, ci_issuer):
    before = counts()
    outside = post(client, low_body(software_statement=sign({"scope": "tickets:read"})), REMOTE_ADDR=OUTSIDE)
    refused(outside, "unapproved_software_statement", "trusted issuer 'CI'", OUTSIDE)
    assert counts() == before
    inside = post(client, low_body(software_statement=sign({"scope": "tickets:read"})), REMOTE_ADDR=INSIDE)
    assert inside.status_code == 201, inside.content


def test_rfc7592_calls_keep_the_condition_and_strangers_still_get_401(client, office_token):
    _, plaintext = office_token
    created = post(client, low_body(), plaintext, REMOTE_ADDR=INSIDE).json()
    uri, rat = path_of(created["registration_client_uri"]), created["registration_access_token"]
    before = counts()
    response = client.get(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=OUTSIDE)
    refused(response, "access_denied", OUTSIDE)
    response = client.delete(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=OUTSIDE)
    refused(response, "access_denied", OUTSIDE)
    assert counts() == before
    assert client.get(uri, HTTP_AUTHORIZATION="Bearer rat_wrong", REMOTE_ADDR=OUTSIDE).status_code == 401
    # The refused calls rotated nothing: the same registration access token works from inside.
    refused(call(client, "GET", uri, rat), "access_denied", "127.0.0.1")  # the test client's own address
    assert client.get(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=INSIDE).status_code == 200


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("10.0.0.0/8", "must be a list"),
        (["10.0.0.0/8", "10.1.2.3/8"], "#2 '10.1.2.3/8' is not a CIDR block"),
        (["example.com"], "#1 'example.com' is not a CIDR block"),
        ([8], "#1 is not a string"),
        (["10.0.0.0/8"] * 101, "at most 100"),
    ],
)
def test_bad_networks_are_refused_with_the_entry_named_and_nothing_saved(ci_issuer, value, fragment):
    with pytest.raises(ValidationError) as caught:
        validate_networks(value)
    assert fragment in str(caught.value)
    ci_issuer.allowed_networks = value
    with pytest.raises(ValidationError):
        ci_issuer.full_clean()
    assert TrustedIssuer.objects.get(pk=ci_issuer.pk).allowed_networks == ["10.0.0.0/8"]
    validate_networks(["192.168.0.0/16", "2001:db8::/32", "10.9.8.7/32"])


def test_minting_with_networks_validates_and_audits_them(catalogue, owner):
    from django.core.management import CommandError, call_command

    from approvals.services import TokenError, token_mint
    from portal.audit import Actor
    from portal.models import AuditEvent

    kwargs = {"actor": Actor.system("test"), "owner": owner, "purpose": "office agents", "scopes": ["tickets:read"]}
    with pytest.raises(TokenError, match="'10.1.2.3/8' is not a CIDR block"):
        token_mint(max_ttl_seconds=3600, allowed_networks=["10.1.2.3/8"], **kwargs)
    assert not InitialAccessToken.objects.exists() and not AuditEvent.objects.exists()
    with pytest.raises(CommandError, match="not a CIDR block"):
        call_command(
            "mint_access_token", "--owner", owner.username, "--purpose", "x-y-z", "--scopes", "tickets:read",
            "--ttl", "3600", "--network", "nonsense",
        )  # fmt: skip
    assert not InitialAccessToken.objects.exists()
    token, _ = token_mint(max_ttl_seconds=3600, allowed_networks=[" 10.0.0.0/8 ", "2001:db8::/32"], **kwargs)
    assert token.allowed_networks == ["10.0.0.0/8", "2001:db8::/32"]
    assert AuditEvent.objects.get(action="token.mint").after["allowed_networks"] == ["10.0.0.0/8", "2001:db8::/32"]


# --- the working window for high-risk human approvals ---------------------------------------------------------

WINDOW = "Mon-Fri 08:00-18:00 Europe/Berlin"


@pytest.mark.parametrize(
    "text,problem",
    [
        ("Mon-Fri 08:00-18:00", "expected e.g."),
        ("Mon-Fry 08:00-18:00 Europe/Berlin", "unknown day"),
        ("Fri-Mon 08:00-18:00 Europe/Berlin", "runs backwards"),
        ("Mon-Fri 18:00-08:00 Europe/Berlin", "must end after it starts"),
        ("Mon-Fri 8-18 Europe/Berlin", "expected e.g."),
        ("Mon-Fri 08:00-18:00 Mars/Olympus", "unknown time zone"),
    ],
)
def test_a_malformed_window_is_refused_naming_the_problem(text, problem):
    from django.core.exceptions import ImproperlyConfigured

    from approvals.conditions import parse_approval_window

    with pytest.raises(ImproperlyConfigured, match=problem):
        parse_approval_window(text)


def test_window_open_and_next_opening_in_its_zone():
    from datetime import UTC, datetime

    from approvals.conditions import parse_approval_window

    window = parse_approval_window(WINDOW)
    assert parse_approval_window("") is None and window is not None
    friday_evening = datetime(2026, 3, 6, 17, 30, tzinfo=UTC)  # 18:30 in Berlin: closed
    assert not window.is_open(friday_evening)
    assert window.is_open(datetime(2026, 3, 6, 16, 59, tzinfo=UTC))  # 17:59 in Berlin
    assert window.next_opening(friday_evening).isoformat() == "2026-03-09T08:00:00+01:00"  # Monday
    assert parse_approval_window("Sat,Sun 10:00-12:00 UTC").days == {5, 6}


def test_high_risk_approval_outside_the_window_waits_and_writes_nothing(high_request, medium_request, approver):
    from datetime import UTC, datetime
    from unittest import mock

    from approvals.choices import RequestState
    from approvals.models import Decision
    from approvals.services import DecisionConflict, request_approve
    from portal.models import AuditEvent

    saturday = datetime(2026, 3, 7, 11, 0, tzinfo=UTC)
    monday = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    before = AuditEvent.objects.count()
    with override_settings(REGISTRAR_HIGH_RISK_APPROVAL_WINDOW=WINDOW):
        with mock.patch("django.utils.timezone.now", return_value=saturday):
            with pytest.raises(DecisionConflict) as caught:
                request_approve(reg_request=high_request, approver=approver, reason="needed for deploys")
            assert "condition approval_window" in str(caught.value)
            assert "waits until Mon 2026-03-09 08:00 Europe/Berlin" in str(caught.value)
            high_request.refresh_from_db()
            assert high_request.state == RequestState.PENDING and not Decision.objects.exists()
            assert AuditEvent.objects.count() == before
            # Medium risk is not held to the window.
            assert request_approve(reg_request=medium_request, approver=approver, reason="ok").state != "pending"
        with mock.patch("django.utils.timezone.now", return_value=monday):
            request_approve(reg_request=high_request, approver=approver, reason="needed for deploys")
    assert Decision.objects.filter(request=high_request, approver=approver).count() == 1


# --- allowed networks on an anonymous registration profile ----------------------------------------------------

MCP_BODY = {
    "client_name": "Example MCP Client",
    "redirect_uris": ["http://127.0.0.1:33418/callback"],
    "token_endpoint_auth_method": "none",
    "application_type": "native",
    "scope": "tickets:read",
}


@pytest.fixture
def office_profile(idp, owner, team, catalogue):
    from approvals.models import AnonymousProfile

    return AnonymousProfile.objects.create(
        idp=idp,
        name="mcp",
        enabled=True,
        owner=owner,
        team=team,
        allowed_scopes=["tickets:read"],
        allowed_networks=["10.0.0.0/8"],
        coalesce=False,
    )


def test_anonymous_profile_networks_accept_inside_and_refuse_outside_writing_nothing(client, office_profile):
    before = counts()
    response = post(client, MCP_BODY, REMOTE_ADDR=OUTSIDE)
    refused(response, "access_denied", "anonymous profile 'mcp'", "10.0.0.0/8", OUTSIDE)
    assert counts() == before  # no request row, no client, no audit event
    created = post(client, MCP_BODY, REMOTE_ADDR=INSIDE)
    assert created.status_code == 201, created.content
    assert counts()["requests"] == before["requests"] + 1 and counts()["clients"] == before["clients"] + 1


def test_anonymous_profile_networks_ignore_a_spoofed_header_without_a_trusted_proxy(client, office_profile):
    before = counts()
    response = post(client, MCP_BODY, REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR=INSIDE)
    refused(response, "access_denied", "anonymous profile 'mcp'", OUTSIDE)
    assert counts() == before


@override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=1)
def test_anonymous_profile_networks_behind_the_trusted_proxy(client, office_profile):
    before = counts()
    spoofed = post(client, MCP_BODY, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{INSIDE}, {OUTSIDE}")
    refused(spoofed, "access_denied", OUTSIDE)
    assert counts() == before
    accepted = post(client, MCP_BODY, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{OUTSIDE}, {INSIDE}")
    assert accepted.status_code == 201, accepted.content


def test_anonymous_registrations_rfc7592_calls_keep_the_profiles_networks(client, office_profile):
    created = post(client, MCP_BODY, REMOTE_ADDR=INSIDE).json()
    uri, rat = path_of(created["registration_client_uri"]), created["registration_access_token"]
    before = counts()
    for method in (client.get, client.delete):
        refused(method(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=OUTSIDE), "access_denied", OUTSIDE)
    assert counts() == before
    read = client.get(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=INSIDE)
    assert read.status_code == 200, read.content
    # The previous token, inside its grace, is held to the condition too.
    refused(client.get(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=OUTSIDE), "access_denied", OUTSIDE)


def test_the_profile_admin_form_names_a_bad_network_and_a_change_is_audited(client, office_profile, admin_user):
    from approvals.admin import AnonymousProfileAdminForm
    from approvals.models import AnonymousProfile
    from portal.models import AuditEvent

    form = AnonymousProfileAdminForm({"allowed_networks": '["10.0.0.0/8", "10.1.2.3/16"]'}, instance=office_profile)
    assert not form.is_valid()
    assert "#2 '10.1.2.3/16' is not a CIDR block" in form.errors["allowed_networks"][0]

    client.force_login(admin_user)
    url = f"/admin/approvals/anonymousprofile/{office_profile.pk}/change/"
    data = {
        "idp": office_profile.idp_id,
        "name": "mcp",
        "enabled": "on",
        "owner": office_profile.owner_id,
        "team": office_profile.team_id,
        "purpose": office_profile.purpose,
        "allowed_scopes": '["tickets:read"]',
        "allow_loopback": "on",
        "redirect_domains": "[]",
        "application_types": '["native"]',
        "max_ttl_seconds": 86400,
        "internal_only": "on",
        "max_live_clients": 10,
        "coalesce_window_seconds": 3600,
        "rate_per_software": "30/m",
        "rate_per_profile": "600/m",
        "allowed_networks": '["nonsense"]',
    }
    bad = client.post(url, data, secure=True)
    assert bad.status_code == 200 and b"not a CIDR block" in bad.content
    assert AnonymousProfile.objects.get().allowed_networks == ["10.0.0.0/8"]
    assert not AuditEvent.objects.filter(action="anonymous_profile.admin_change").exists()
    good = client.post(url, data | {"allowed_networks": '[" 192.168.0.0/16 ", "2001:db8::/32"]'}, secure=True)
    assert good.status_code == 302, good.content[:2000]
    assert AnonymousProfile.objects.get().allowed_networks == ["192.168.0.0/16", "2001:db8::/32"]
    assert AuditEvent.objects.filter(action="anonymous_profile.admin_change").count() == 1


# --- allowed networks per policy tier -------------------------------------------------------------------------


@pytest.fixture
def medium_only_from_office(catalogue, idp):
    """A policy version whose medium tier carries networks; the low tier none."""
    from approvals.policy_store import active_policy, policy_publish
    from portal.audit import Actor

    thresholds = active_policy(use_cache=False).to_dict() | {"medium_allowed_networks": ["10.0.0.0/8"]}
    return policy_publish(actor=Actor.system("test"), thresholds=thresholds, note="medium from the office")


MEDIUM = {"internal_only": False}  # low_body, but not internal-only: the medium tier


def tier_refused(response, address: str, version: int) -> None:
    refused(response, "access_denied", f"of the medium tier (policy v{version})", "10.0.0.0/8", address)


def test_a_tier_with_networks_refuses_from_outside_and_records_it_like_a_policy_refusal(
    client, catalogue, idp, owner, medium_only_from_office
):
    from approvals.models import RegistrationRequest

    token, plaintext = make_token(owner)
    before = counts()
    response = post(client, low_body(**MEDIUM), plaintext, REMOTE_ADDR=OUTSIDE)
    tier_refused(response, OUTSIDE, medium_only_from_office.version)
    row = RegistrationRequest.objects.get()
    assert row.state == "refused" and row.error == "access_denied"
    assert [r["code"] for r in row.reasons][0] == "tier_allowed_networks"
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    assert counts()["clients"] == before["clients"]
    assert InitialAccessToken.objects.get(pk=token.pk).uses == 0  # a refusal uses nothing up
    # The low tier carries no networks; the medium tier from inside goes to review as before.
    assert post(client, low_body(), plaintext, REMOTE_ADDR=OUTSIDE).status_code == 201
    inside = post(client, low_body(**MEDIUM, client_name="inside"), plaintext, REMOTE_ADDR=INSIDE)
    assert inside.status_code == 202, inside.content


def test_a_tiers_networks_ignore_a_spoofed_header_without_a_trusted_proxy(
    client, catalogue, idp, owner, medium_only_from_office
):
    _, plaintext = make_token(owner)
    response = post(client, low_body(**MEDIUM), plaintext, REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR=INSIDE)
    tier_refused(response, OUTSIDE, medium_only_from_office.version)


@override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=1)
def test_a_tiers_networks_behind_the_trusted_proxy(client, catalogue, idp, owner, medium_only_from_office):
    _, plaintext = make_token(owner)
    spoofed = post(
        client, low_body(**MEDIUM), plaintext, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{INSIDE}, {OUTSIDE}"
    )
    tier_refused(spoofed, OUTSIDE, medium_only_from_office.version)
    accepted = post(
        client, low_body(**MEDIUM, client_name="via-proxy"), plaintext, REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=f"{OUTSIDE}, {INSIDE}",
    )  # fmt: skip
    assert accepted.status_code == 202, accepted.content


def test_an_anonymous_registration_of_a_conditioned_tier_is_refused_without_a_row(client, office_profile, idp):
    from approvals.policy_store import active_policy, policy_publish
    from portal.audit import Actor

    office_profile.allowed_networks = []
    office_profile.save()
    thresholds = active_policy(use_cache=False).to_dict() | {"low_allowed_networks": ["192.168.0.0/16"]}
    policy = policy_publish(actor=Actor.system("test"), thresholds=thresholds)
    before = counts()
    response = post(client, MCP_BODY, REMOTE_ADDR=OUTSIDE)
    refused(response, "access_denied", f"of the low tier (policy v{policy.version})", OUTSIDE)
    assert counts() == before
    assert post(client, MCP_BODY, REMOTE_ADDR="192.168.4.5").status_code == 201


@pytest.mark.parametrize(
    "networks,fragment",
    [
        (["10.0.0.0/8", "10.1.2.3/8"], "high_allowed_networks: allowed network #2 '10.1.2.3/8' is not a CIDR block"),
        ("10.0.0.0/8", "high_allowed_networks: allowed networks must be a list"),
        ([7], "high_allowed_networks: allowed network #1 is not a string"),
    ],
)
def test_a_policy_version_with_a_bad_tier_network_is_refused_naming_it_and_nothing_published(
    admin_user, networks, fragment
):
    from rest_framework.test import APIClient

    from approvals.admin import PolicyAdminForm
    from approvals.models import Policy
    from approvals.policy_store import PolicyError, validate_thresholds
    from portal.models import AuditEvent

    before = Policy.objects.count()
    with pytest.raises(PolicyError) as caught:
        validate_thresholds({"high_allowed_networks": networks})
    assert fragment in str(caught.value)
    form = PolicyAdminForm({"thresholds": f'{{"high_allowed_networks": {__import__("json").dumps(networks)}}}'})
    assert not form.is_valid() and fragment in form.errors["thresholds"][0]
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post("/api/v1/policy/", {"thresholds": {"high_allowed_networks": networks}}, format="json")
    assert response.status_code == 400 and fragment in response.json()["thresholds"][0]
    assert Policy.objects.count() == before and not AuditEvent.objects.filter(action="policy.publish").exists()


def test_the_api_shows_and_publishes_tier_networks(admin_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post(
        "/api/v1/policy/", {"thresholds": {"high_allowed_networks": [" 10.0.0.0/8", "2001:db8::/32"]}}, format="json"
    )
    assert response.status_code == 201, response.content
    shown = api.get("/api/v1/policy/").json()["results"][0]["thresholds"]
    assert shown["high_allowed_networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert shown["low_allowed_networks"] == [] and shown["medium_allowed_networks"] == []


def test_rfc7592_calls_keep_the_tiers_networks(client, catalogue, idp, owner, medium_only_from_office):
    _, plaintext = make_token(owner)
    created = post(client, low_body(**MEDIUM), plaintext, REMOTE_ADDR=INSIDE).json()
    uri, rat = path_of(created["registration_client_uri"]), created["registration_access_token"]
    before = counts()
    response = client.get(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=OUTSIDE)
    refused(response, "access_denied", f"the medium tier (policy v{medium_only_from_office.version})", OUTSIDE)
    assert counts() == before
    assert client.get(uri, HTTP_AUTHORIZATION=f"Bearer {rat}", REMOTE_ADDR=INSIDE).status_code == 202
    # A low-tier registration is not held to the medium tier's networks.
    low = post(client, low_body(client_name="low"), plaintext, REMOTE_ADDR=OUTSIDE).json()
    low_uri, low_rat = path_of(low["registration_client_uri"]), low["registration_access_token"]
    assert client.get(low_uri, HTTP_AUTHORIZATION=f"Bearer {low_rat}", REMOTE_ADDR=OUTSIDE).status_code == 200
