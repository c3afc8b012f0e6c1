"""Pre-registration (docs/cimd.md): /inventory/new/ and POST /api/v1/registrations/ through the agent path's own
intake — who may submit, what a refusal leaves behind, separation of duties, and created_via on the client."""

# ruff: noqa: F811 - the fixtures imported from tests.https_host are test parameters here

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.cache import cache

from approvals.choices import RequestState
from approvals.models import RegistrationRequest, TrustedCimdDomain
from approvals.services import DecisionForbidden, request_approve
from inventory.choices import ClientState, CreatedVia
from inventory.models import Client
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    counts,
    low_body,
)
from tests.approvals.test_requests_api import api_for
from tests.factories import UserFactory
from tests.https_host import https_host, loopback_fetches  # noqa: F401

pytestmark = pytest.mark.django_db

API = "/api/v1/registrations/"
PAGE = "/inventory/new/"
DOC_PATH = "/oauth/client.json"


@pytest.fixture(autouse=True)
def _setup(catalogue, idp):
    cache.clear()
    yield
    cache.clear()


def medium_metadata(**overrides) -> dict:
    """Reviewed, not refused: not internal-only."""
    return low_body(internal_only=False, **overrides)


def serve_document(https_host, **changes) -> tuple[str, bytes]:
    url = https_host.url(DOC_PATH, host="app.example.test")
    document = {
        "client_id": url,
        "client_name": "Desk Agent",
        "redirect_uris": ["https://app.example.test/callback"],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **changes,
    }
    body = json.dumps(document).encode()
    https_host.serve(DOC_PATH, body)
    return url, body


def post(api, body):
    return api.post(API, data=json.dumps(body), content_type="application/json")


# --- the API: who may submit ---------------------------------------------------------------------------


def test_an_owner_pre_registers_metadata_for_review(owner):
    before = AuditEvent.objects.count()
    response = post(api_for(owner), {"metadata": medium_metadata()})
    assert response.status_code == 201, response.content
    body = response.json()
    req = RegistrationRequest.objects.get()
    assert body["id"] == req.public_id and body["state"] == "pending" == req.state
    assert body["via"] == "pre_registration" == req.via
    assert body["submitted_by"] == "olivia" and body["owner"] == "olivia" and body["risk_tier"] == "medium"
    assert body["policy_version"] == 1 and body["client_id"] is None
    assert req.submitted_by_id == owner.pk and req.owner_id == owner.pk
    event = AuditEvent.objects.get(id__gt=0, action="registration.pending")
    assert AuditEvent.objects.count() == before + 1
    assert event.actor_type == "user" and event.actor_id == str(owner.pk)
    assert event.after["submitted_by"] == "olivia"


def test_a_low_risk_pre_registration_is_approved_and_the_client_says_how_it_came(owner):
    response = post(api_for(owner), {"metadata": low_body()})
    assert response.status_code == 201, response.content
    client = Client.objects.get()
    assert response.json()["state"] == "approved" and response.json()["client_id"] == client.registration_id
    assert client.created_via == CreatedVia.PRE_REGISTRATION and client.owner_id == owner.pk
    assert client.state == ClientState.ACTIVE  # delivered inline to the (dry-run) IdP, as on the agent path


def test_governance_fields_override_the_pasted_metadata(owner):
    response = post(
        api_for(owner),
        {
            "metadata": medium_metadata(purpose="old purpose here"),
            "purpose": "Nightly ticket digest",
            "scope": "docs:read",
        },
    )
    assert response.status_code == 201, response.content
    req = RegistrationRequest.objects.get()
    assert req.purpose == "Nightly ticket digest" and req.requested_scopes == ["docs:read"]


def test_an_owner_cannot_submit_for_someone_else(owner):
    other = UserFactory(username="otto", roles=["owner"])
    before = counts()
    response = post(api_for(owner), {"metadata": medium_metadata(), "owner": "otto"})
    assert response.status_code == 403
    assert response.json()["error_description"] == "only an admin may pre-register a client for another owner"
    assert counts() == before and other.pk


def test_an_admin_submits_for_any_owner(admin_user, owner):
    response = post(api_for(admin_user), {"metadata": medium_metadata(), "owner": "olivia"})
    assert response.status_code == 201, response.content
    req = RegistrationRequest.objects.get()
    assert req.owner_id == owner.pk and req.submitted_by_id == admin_user.pk
    assert response.json()["submitted_by"] == "root-admin"


@pytest.mark.parametrize(
    ("username", "roles", "service_account"),
    [("bob", ["approver"], False), ("ciso", ["security"], False), ("robot", ["admin"], True)],
)
def test_others_may_not_pre_register(username, roles, service_account):
    user = UserFactory(username=username, roles=roles, is_service_account=service_account)
    before = counts()
    response = post(api_for(user), {"metadata": medium_metadata()})
    assert response.status_code == 403, response.content
    assert counts() == before


def test_an_unknown_owner_is_a_400(admin_user):
    before = counts()
    response = post(api_for(admin_user), {"metadata": medium_metadata(), "owner": "nobody"})
    assert response.status_code == 400 and "no active user 'nobody'" in response.content.decode()
    assert counts() == before


# --- the API: refusals ---------------------------------------------------------------------------------


def test_malformed_json_is_a_400_and_writes_nothing(owner):
    before = counts()
    response = api_for(owner).post(API, data='{"metadata": {', content_type="application/json")
    assert response.status_code == 400 and "JSON parse error" in response.json()["detail"]
    assert counts() == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "give either cimd_url or metadata"),
        ({"metadata": {}, "cimd_url": "https://a.example/c.json"}, "give either cimd_url or metadata"),
        ({"metadata": []}, "Expected a dictionary"),
    ],
)
def test_a_body_that_is_neither_is_a_400(owner, body, fragment):
    before = counts()
    response = post(api_for(owner), body)
    assert response.status_code == 400 and fragment in response.content.decode()
    assert counts() == before


def test_invalid_metadata_is_a_400_listing_every_problem_and_writes_nothing(owner):
    before = counts()
    bad = medium_metadata(redirect_uris=["http://evil.example/cb"], grant_types=["password"])
    response = post(api_for(owner), {"metadata": bad})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_client_metadata"
    assert any("password grant is not allowed" in r for r in body["reasons"])
    assert any("http://evil.example/cb" in r for r in body["reasons"])
    assert counts() == before


def test_a_policy_refusal_is_recorded_like_an_agents(owner):
    before = counts()
    response = post(api_for(owner), {"metadata": medium_metadata(scope="nope:write")})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_client_metadata" and "not in the scope catalogue" in body["error_description"]
    req = RegistrationRequest.objects.get()
    assert body["request"]["id"] == req.public_id and req.state == RequestState.REFUSED
    assert req.via == "pre_registration" and req.submitted_by_id == owner.pk
    assert counts() == before | {"requests": 1, "audit": before["audit"] + 1}
    assert AuditEvent.objects.filter(action="registration.refused", object_id=req.public_id).count() == 1


# --- separation of duties ------------------------------------------------------------------------------


def test_the_submitter_can_never_approve_it_whatever_their_roles(owner, approver):
    boss = UserFactory(username="boss", roles=["admin", "approver"])
    boss_api = api_for(boss)
    response = post(boss_api, {"metadata": medium_metadata(), "owner": "olivia"})
    assert response.status_code == 201
    req = RegistrationRequest.objects.get()
    with pytest.raises(DecisionForbidden, match="you requested or sponsor this client"):
        request_approve(reg_request=req, approver=boss, reason="mine")
    # through the API too: 403, still pending
    decided = boss_api.post(f"/api/v1/requests/{req.public_id}/approve/", {"reason": "x"}, format="json")
    assert decided.status_code == 403
    assert RegistrationRequest.objects.get().state == RequestState.PENDING

    approved = request_approve(reg_request=req, approver=approver, reason="looks fine")
    assert approved.state == RequestState.APPROVED
    client = Client.objects.get()
    assert client.created_via == CreatedVia.PRE_REGISTRATION and client.owner_id == owner.pk


# --- CIMD ----------------------------------------------------------------------------------------------


def test_a_cimd_url_becomes_a_request_with_its_document(owner, loopback_fetches, https_host):
    url, body = serve_document(https_host)
    response = post(api_for(owner), {"cimd_url": url, "purpose": "Service desk assistant", "internal_only": True})
    assert response.status_code == 201, response.content
    req = RegistrationRequest.objects.get()
    shown = response.json()
    assert shown["via"] == "cimd" == req.via and shown["cimd_url"] == url == req.cimd_url
    assert shown["cimd_sha256"] == hashlib.sha256(body).hexdigest() == req.cimd_sha256
    assert req.cimd_document["client_id"] == url and req.client_name == "Desk Agent"
    assert req.purpose == "Service desk assistant" and req.state == RequestState.PENDING
    assert {r["code"] for r in req.reasons} >= {"cimd_untrusted_domain", "not_key_based_auth"}


def test_a_cimd_document_on_a_trusted_domain_may_auto_approve(owner, loopback_fetches, https_host):
    TrustedCimdDomain.objects.create(domain="app.example.test")
    url, _ = serve_document(https_host)
    response = post(
        api_for(owner),
        {"cimd_url": url, "purpose": "Service desk assistant", "scope": "tickets:read", "internal_only": True},
    )
    assert response.status_code == 201, response.content
    assert response.json()["state"] == "approved", response.json()["reasons"]
    client = Client.objects.get()
    assert client.created_via == CreatedVia.CIMD and client.auth_method == "none"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"status": 302, "headers": {"Location": "https://elsewhere.example.test/"}}, "cimd_redirect"),
        ({"status": 500}, "cimd_status"),
        ({"body": b"{not json"}, "cimd_json"),
    ],
)
def test_a_refused_cimd_document_writes_nothing(owner, loopback_fetches, https_host, answer, code):
    url = https_host.url(DOC_PATH, host="app.example.test")
    https_host.serve(DOC_PATH, **{"body": b"{}", **answer})
    before = counts()
    response = post(api_for(owner), {"cimd_url": url, "purpose": "Service desk assistant"})
    assert response.status_code == 400
    assert response.json()["error"] == code and response.json()["error_description"]
    assert counts() == before


def test_a_cimd_document_naming_another_client_id_writes_nothing(owner, loopback_fetches, https_host):
    serve_document(https_host, client_id="https://evil.example.test/client.json")
    before = counts()
    response = post(
        api_for(owner),
        {"cimd_url": https_host.url(DOC_PATH, host="app.example.test"), "purpose": "Service desk assistant"},
    )
    assert response.status_code == 400 and response.json()["error"] == "cimd_invalid"
    assert "is not the URL the document was fetched from" in response.json()["error_description"]
    assert counts() == before


def test_a_cimd_url_needs_a_purpose_and_https(owner):
    before = counts()
    api = api_for(owner)
    response = post(api, {"cimd_url": "https://app.example.test/c.json"})
    assert response.status_code == 400 and "purpose is required" in response.json()["error_description"]
    response = post(api, {"cimd_url": "http://app.example.test/c.json", "purpose": "Service desk"})
    assert response.status_code == 400 and response.json()["error"] == "cimd_url"
    assert "must use https" in response.json()["error_description"]
    assert counts() == before


# --- the page ------------------------------------------------------------------------------------------


def test_the_page_is_for_owners_and_admins(client, owner, approver, admin_user):
    client.force_login(owner)
    page = client.get(PAGE)
    assert page.status_code == 200 and "Pre-register a client" in page.content.decode()
    assert 'name="owner"' not in page.content.decode()  # owners submit for themselves
    client.force_login(admin_user)
    assert 'name="owner"' in client.get(PAGE).content.decode()
    client.force_login(approver)
    assert client.get(PAGE).status_code == 403


def test_an_owner_pre_registers_a_cimd_url_on_the_page(client, owner, loopback_fetches, https_host):
    url, _ = serve_document(https_host)
    client.force_login(owner)
    response = client.post(
        PAGE,
        {"source": "cimd", "cimd_url": url, "purpose": "Service desk assistant", "internal_only": "on"},
        follow=True,
    )
    assert response.status_code == 200
    req = RegistrationRequest.objects.get()
    assert req.via == "cimd" and req.submitted_by_id == owner.pk and req.internal_only
    assert f"{req.public_id} waits for review" in response.content.decode()


def test_pasted_json_that_does_not_parse_is_refused_on_the_page(client, owner):
    client.force_login(owner)
    before = counts()
    response = client.post(PAGE, {"source": "metadata", "metadata": '{"client_name": "x",'})
    assert response.status_code == 400 and "Not valid JSON" in response.content.decode()
    response = client.post(
        PAGE, {"source": "metadata", "metadata": json.dumps(medium_metadata(grant_types=["password"]))}
    )
    assert response.status_code == 400 and "password grant is not allowed" in response.content.decode()
    assert counts() == before


def test_a_refused_document_is_shown_on_the_page(client, owner, loopback_fetches, https_host):
    url = https_host.url(DOC_PATH, host="app.example.test")
    https_host.serve(DOC_PATH, b"{}", status=301, headers={"Location": "https://x.example.test/"})
    client.force_login(owner)
    before = counts()
    response = client.post(PAGE, {"source": "cimd", "cimd_url": url, "purpose": "Service desk assistant"})
    assert response.status_code == 400 and "redirect" in response.content.decode().lower()
    assert counts() == before


def test_an_admin_submits_on_the_page_for_an_owner(client, admin_user, owner):
    client.force_login(admin_user)
    response = client.post(
        PAGE,
        {"source": "metadata", "metadata": json.dumps(medium_metadata()), "owner": owner.pk},
        follow=True,
    )
    assert response.status_code == 200
    req = RegistrationRequest.objects.get()
    assert req.owner_id == owner.pk and req.submitted_by_id == admin_user.pk and req.via == "pre_registration"
    assert req.metadata["jwks"] == PUBLIC_JWKS


def test_keys_that_cannot_be_fetched_write_nothing(owner, loopback_fetches, https_host):
    https_host.serve("/jwks.json", b"{}", status=404)
    before = counts()
    body = medium_metadata(jwks=None, jwks_uri=https_host.url("/jwks.json", host="keys.example.test"))
    response = post(api_for(owner), {"metadata": body})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"
    assert "404" in response.json()["error_description"]
    assert counts() == before


def test_the_submitter_finds_and_may_withdraw_what_they_submitted_for_someone_else(admin_user, owner):
    from approvals.selectors import requests_of_owner
    from approvals.services import request_withdraw

    response = post(api_for(admin_user), {"metadata": medium_metadata(), "owner": "olivia"})
    req = RegistrationRequest.objects.get(public_id=response.json()["id"])
    assert list(requests_of_owner(admin_user)) == [req]
    assert request_withdraw(reg_request=req, actor=admin_user).state == RequestState.WITHDRAWN


def test_a_request_for_no_scopes_is_approved_on_the_page(client, owner, approver, loopback_fetches, https_host):
    url, _ = serve_document(https_host)
    done = post(api_for(owner), {"cimd_url": url, "purpose": "Service desk assistant"})
    req = RegistrationRequest.objects.get(public_id=done.json()["id"])
    assert req.requested_scopes == []
    client.force_login(approver)
    response = client.post(
        f"/approvals/{req.public_id}/decide/", {"decision": "approve", "reason": "ok", "narrow": "True"}
    )
    assert response.status_code == 302, response.content.decode()[-500:]
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.APPROVED
