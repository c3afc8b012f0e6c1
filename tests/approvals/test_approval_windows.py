"""The working window for human approvals of high-risk requests, set on an initial access token, a trusted issuer,
an anonymous profile or the policy's high tier, with ``REGISTRAR_HIGH_RISK_APPROVAL_WINDOW`` as the default; the
most specific one applies (approvals.conditions.applicable_window). All on a fixed clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest import mock

import pytest
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from approvals.choices import RequestState
from approvals.conditions import applicable_window, approval_window_closed
from approvals.models import AnonymousProfile, Decision, InitialAccessToken, TrustedIssuer
from inventory.choices import RiskTier
from portal.models import AuditEvent
from tests.api.test_config_api import issuer_body

pytestmark = pytest.mark.django_db

BERLIN = "Mon-Fri 08:00-18:00 Europe/Berlin"
SATURDAY = datetime(2026, 3, 7, 11, 0, tzinfo=UTC)
MONDAY = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
TOKENS_SOURCE = f"the token's working window {BERLIN}"


def at(moment):
    return mock.patch("django.utils.timezone.now", return_value=moment)


def api_as(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def publish(**thresholds):
    from approvals.policy_store import active_policy, policy_publish
    from portal.audit import Actor

    merged = active_policy(use_cache=False).to_dict() | thresholds
    return policy_publish(actor=Actor.system("test"), thresholds=merged, note="window")


@pytest.fixture(autouse=True)
def _no_global_window():
    with override_settings(REGISTRAR_HIGH_RISK_APPROVAL_WINDOW=""):
        yield


@pytest.fixture
def profile(idp, owner, team, catalogue):
    return AnonymousProfile.objects.create(
        idp=idp, name="mcp", enabled=True, owner=owner, team=team, allowed_scopes=["tickets:read"]
    )


@pytest.fixture
def issuer(owner, catalogue):
    body = issuer_body()
    return TrustedIssuer.objects.create(
        name="CI", kind="oidc", issuer=body["issuer"], audience="registrar", jwks=body["jwks"], subject="repo:*",
        owner=owner, purpose="CI", allowed_scopes=["docs:read"],
    )  # fmt: skip


def test_the_tokens_window_inside_approves_outside_waits_409_writing_nothing(make_request, approver, approver2):
    req = make_request(RiskTier.HIGH)
    req.token.approval_window = BERLIN
    req.token.save(update_fields=["approval_window"])
    url = f"/api/v1/requests/{req.public_id}/approve/"
    before = AuditEvent.objects.count()
    with at(SATURDAY):
        response = api_as(approver).post(url, {"reason": "needed for deploys"}, format="json")
    assert response.status_code == 409, response.content
    text = json.dumps(response.json())
    assert TOKENS_SOURCE in text and "waits until Mon 2026-03-09 08:00 Europe/Berlin" in text
    req.refresh_from_db()
    assert req.state == RequestState.PENDING and not Decision.objects.exists()
    assert AuditEvent.objects.count() == before
    with at(MONDAY):
        assert api_as(approver).post(url, {"reason": "needed"}, format="json").status_code == 200
        assert api_as(approver2).post(url, {"reason": "needed"}, format="json").status_code == 200
    req.refresh_from_db()
    assert req.state == RequestState.APPROVED and Decision.objects.filter(request=req).count() == 2


def test_medium_risk_is_not_held_to_a_tokens_window(make_request, approver):
    from approvals.services import request_approve

    req = make_request(RiskTier.MEDIUM)
    req.token.approval_window = BERLIN
    req.token.save(update_fields=["approval_window"])
    with at(SATURDAY):
        assert request_approve(reg_request=req, approver=approver, reason="ok").state == RequestState.APPROVED


def test_precedence_own_window_then_the_policy_tiers_then_the_global(make_request, issuer, profile):
    from approvals.services import DecisionConflict

    req = make_request(RiskTier.HIGH)
    assert applicable_window(req) is None and approval_window_closed(SATURDAY, req) is None
    with override_settings(REGISTRAR_HIGH_RISK_APPROVAL_WINDOW="Sat,Sun 10:00-12:00 UTC"):
        applied = applicable_window(req)
        assert applied is not None and applied.source.endswith("REGISTRAR_HIGH_RISK_APPROVAL_WINDOW")
        assert approval_window_closed(SATURDAY, req) is None  # Saturday 11:00 UTC: the global window is open
        version = publish(high_approval_window="Mon-Fri 08:00-18:00 UTC").version
        closed = approval_window_closed(SATURDAY, req)
        assert closed is not None
        assert f"the high tier's working window (policy v{version}) Mon-Fri 08:00-18:00 UTC" in closed
        req.token.approval_window = BERLIN
        req.token.save(update_fields=["approval_window"])
        assert applicable_window(req).described == TOKENS_SOURCE
        assert approval_window_closed(MONDAY, req) is None
        req.token.approval_window = "Sat 10:00-12:00 UTC"  # the token's own, more specific window wins
        req.token.save(update_fields=["approval_window"])
        assert approval_window_closed(SATURDAY, req) is None
        with at(MONDAY), pytest.raises(DecisionConflict, match="the token's working window Sat 10:00-12:00 UTC"):
            _approve_as_someone(req)

        by_issuer = make_request(RiskTier.HIGH, token=None, issuer=issuer)
        issuer.approval_window = "Sun 09:00-10:00 Asia/Tokyo"
        issuer.save(update_fields=["approval_window"])
        assert (
            applicable_window(by_issuer).described == "the trusted issuer's working window Sun 09:00-10:00 Asia/Tokyo"
        )
        by_profile = make_request(RiskTier.HIGH, token=None, profile=profile)
        assert applicable_window(by_profile).source.startswith("the high tier's")  # the profile has none
        profile.approval_window = "Tue 08:00-09:00 UTC"
        profile.save(update_fields=["approval_window"])
        assert applicable_window(by_profile).described == "the anonymous profile's working window Tue 08:00-09:00 UTC"
        publish(high_approval_window="")
        assert applicable_window(make_request(RiskTier.HIGH)).source.endswith("REGISTRAR_HIGH_RISK_APPROVAL_WINDOW")


def _approve_as_someone(req):
    from approvals.services import request_approve
    from tests.factories import UserFactory

    return request_approve(reg_request=req, approver=UserFactory(username="dora", roles=["approver"]), reason="x")


BAD = [
    ("Mon-Fry 08:00-18:00 Europe/Berlin", "unknown day"),
    ("Mon-Fri 18:00-08:00 UTC", "must end after it starts"),
    ("Mon-Fri 08:00-18:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("weekdays", "'weekdays'"),
]


@pytest.mark.parametrize("value,problem", BAD)
def test_a_bad_window_is_refused_naming_it_and_nothing_minted(client, owner, catalogue, idp, value, problem):
    from django.core.management import CommandError, call_command

    from approvals.services import TokenError, token_mint
    from portal.audit import Actor

    client.force_login(owner)
    form = {"purpose": "nightly", "scopes": ["tickets:read"], "max_ttl_hours": "1", "max_uses": "1", "valid_days": "1"}
    page = client.post("/tokens/", form | {"approval_window": value})
    assert page.status_code == 400 and problem in page.content.decode().replace("&#x27;", "'")
    api = api_as(owner)
    body = {"purpose": "nightly", "scopes": ["tickets:read"], "max_ttl_hours": 1, "approval_window": value}
    response = api.post("/api/v1/tokens/", body, format="json")
    assert response.status_code == 400 and problem in response.json()["approval_window"][0]
    with pytest.raises(TokenError, match="working window"):
        token_mint(actor=Actor.system("t"), owner=owner, purpose="nightly", scopes=["tickets:read"],
                   max_ttl_seconds=3600, approval_window=value)  # fmt: skip
    with pytest.raises(CommandError, match="working window"):
        call_command(
            "mint_access_token", "--owner", owner.username, "--purpose", "nightly", "--scopes", "tickets:read",
            "--ttl", "3600", "--approval-window", value,
        )  # fmt: skip
    assert not InitialAccessToken.objects.exists() and not AuditEvent.objects.exists()
    minted = api.post("/api/v1/tokens/", body | {"approval_window": f" {BERLIN} "}, format="json")
    assert minted.status_code == 201, minted.content
    assert InitialAccessToken.objects.get().approval_window == BERLIN
    assert AuditEvent.objects.get(action="token.mint").after["approval_window"] == BERLIN
    shown = client.post("/tokens/", form | {"approval_window": "Sat 10:00-11:00 UTC"})
    assert shown.status_code == 200 and "Sat 10:00-11:00 UTC" in shown.content.decode()  # the minted page
    assert InitialAccessToken.objects.filter(approval_window="Sat 10:00-11:00 UTC").count() == 1


@pytest.mark.parametrize("value,problem", BAD)
def test_a_bad_window_on_an_issuer_or_profile_is_refused_and_nothing_saved(
    client, admin_user, issuer, profile, value, problem
):
    from approvals.admin import AnonymousProfileAdminForm, InitialAccessTokenAdminForm

    api = api_as(admin_user)
    created = api.post("/api/v1/trusted-issuers/", issuer_body(name="other", approval_window=value), format="json")
    assert created.status_code == 400 and problem in created.json()["approval_window"][0]
    changed = api.patch(f"/api/v1/trusted-issuers/{issuer.pk}/", {"approval_window": value}, format="json")
    assert changed.status_code == 400 and problem in changed.json()["approval_window"][0]
    assert TrustedIssuer.objects.count() == 1 and TrustedIssuer.objects.get().approval_window == ""
    client.force_login(admin_user)
    url = f"/admin/approvals/trustedissuer/{issuer.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and b'name="approval_window"' in page.content
    form = AnonymousProfileAdminForm({"approval_window": value}, instance=profile)
    assert not form.is_valid() and problem in form.errors["approval_window"][0]
    token_form = InitialAccessTokenAdminForm({"approval_window": value})
    assert not token_form.is_valid() and problem in token_form.errors["approval_window"][0]
    assert AnonymousProfile.objects.get().approval_window == ""
    assert not AuditEvent.objects.exists()
    nul = api.patch(f"/api/v1/trusted-issuers/{issuer.pk}/", {"team": "a\x00b", "owner": "o\x00"}, format="json")
    assert nul.status_code == 400 and set(nul.json()) >= {"team", "owner"}  # not a 500 from PostgreSQL
    ok = api.patch(f"/api/v1/trusted-issuers/{issuer.pk}/", {"approval_window": BERLIN}, format="json")
    assert ok.status_code == 200 and ok.json()["approval_window"] == BERLIN


@pytest.mark.parametrize("value,problem", BAD + [(7, "must be text")])
def test_a_policy_version_with_a_bad_high_window_is_refused_and_nothing_published(admin_user, value, problem):
    from approvals.admin import PolicyAdminForm
    from approvals.models import Policy
    from approvals.policy_store import PolicyError, validate_thresholds

    before = Policy.objects.count()
    with pytest.raises(PolicyError, match="high_approval_window"):
        validate_thresholds({"high_approval_window": value})
    form = PolicyAdminForm({"thresholds": json.dumps({"high_approval_window": value})})
    assert not form.is_valid() and problem in form.errors["thresholds"][0]
    api = api_as(admin_user)
    response = api.post("/api/v1/policy/", {"thresholds": {"high_approval_window": value}}, format="json")
    assert response.status_code == 400 and problem in response.json()["thresholds"][0]
    assert Policy.objects.count() == before and not AuditEvent.objects.filter(action="policy.publish").exists()
    good = api.post("/api/v1/policy/", {"thresholds": {"high_approval_window": BERLIN}}, format="json")
    assert good.status_code == 201, good.content
    assert api.get("/api/v1/policy/").json()["results"][0]["thresholds"]["high_approval_window"] == BERLIN


def test_the_detail_page_shows_the_window_and_when_it_opens_next(client, approver, make_request):
    req = make_request(RiskTier.HIGH)
    req.token.approval_window = BERLIN
    req.token.save(update_fields=["approval_window"])
    client.force_login(approver)
    url = reverse("approvals:detail", args=[req.public_id])
    with at(SATURDAY):
        html = client.get(url).content.decode().replace("&#x27;", "'")
    assert TOKENS_SOURCE in html and "opens next Mon 2026-03-09 08:00 Europe/Berlin" in html
    with at(MONDAY):
        html = client.get(url).content.decode().replace("&#x27;", "'")
    assert TOKENS_SOURCE in html and "open now" in html and "opens next" not in html
    plain = make_request(RiskTier.HIGH, client_name="other")
    html = client.get(reverse("approvals:detail", args=[plain.public_id])).content.decode()
    assert "none: approvals at any time" in html
