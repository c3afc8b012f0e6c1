"""POST /oauth2/register (RFC 7591): every response code and every policy rule, through HTTP."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import clear_script_prefix, set_script_prefix
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import InitialAccessToken, Policy, RegistrationRequest
from approvals.policy_store import policy_publish
from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.models import Client, OutboxEntry
from portal.audit import Actor
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    counts,
    fold_refusals,
    low_body,
    make_token,
    post,
    refusals_counted,
)
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(catalogue, idp, owner):
    return owner


@pytest.fixture
def token(setup):
    return make_token(setup)


def _assert_rfc7591_error(response, status: int, error: str, *fragments: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    for fragment in fragments:
        assert fragment in body["error_description"]
    assert response["Cache-Control"] == "no-store"
    return body


# --- 201 ---------------------------------------------------------------------------------------------


def test_low_risk_registration_is_created_at_the_idp_and_answered_201(client, token, owner):
    row, plaintext = token
    before = counts()

    response = post(client, low_body(), plaintext)

    assert response.status_code == 201, response.content
    body = response.json()
    reg = RegistrationRequest.objects.get()
    created = Client.objects.get()
    assert body["client_id"] == f"dryrun-{reg.public_id}" == created.idp_client_id
    assert body["registration_id"] == reg.public_id == created.registration_id
    assert body["registration_client_uri"] == f"http://testserver/oauth2/register/{reg.public_id}"
    assert response["Location"] == body["registration_client_uri"]
    assert body["registration_access_token"].startswith("rrat_")
    assert body["issuer"] == "https://idp.test" and body["token_endpoint"] == "https://idp.test/token"
    assert body["scope"] == "tickets:read"
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert body["jwks"] == PUBLIC_JWKS
    assert body["client_id_issued_at"] == int(created.activated_at.timestamp())
    assert body["expires_at"] == int(created.expires_at.timestamp())
    assert body["dry_run"] is True
    # the client really is active "at the IdP" and its create was delivered
    assert created.state == ClientState.ACTIVE and created.owner == owner and created.created_via == "token"
    assert created.expires_at - created.created_at <= timedelta(seconds=3601)
    assert OutboxEntry.objects.get().status == OutboxStatus.DONE
    assert reg.state == RequestState.APPROVED and reg.client == created and reg.token == row
    assert reg.purpose == "Summarise support tickets nightly" and reg.owner == owner
    row.refresh_from_db()
    assert row.uses == 1 and row.last_used_at is not None
    assert counts() == {
        "requests": before["requests"] + 1,
        "clients": before["clients"] + 1,
        "outbox": before["outbox"] + 1,
        "audit": before["audit"] + 3,  # registration.accepted, client.create, client.active
    }
    event = AuditEvent.objects.get(action="registration.accepted")
    assert event.object_id == reg.public_id and event.actor_id == str(row.pk)
    assert event.after["token_id"] == row.pk and event.after["verdict"]["outcome"] == "auto_approve"
    assert event.policy_version == 1


def test_registration_client_uri_follows_the_script_prefix(client, token):
    """The RFC 7592 path is reversed once per script prefix (cached): a deployment under a sub-path gets its own."""
    _, plaintext = token
    set_script_prefix("/registrar/")  # what WSGIHandler does for SCRIPT_NAME=/registrar (the test client does not)
    try:
        mounted = post(client, low_body(scope="tickets:write"), plaintext)
    finally:
        clear_script_prefix()
    plain = post(client, low_body(scope="tickets:write"), plaintext)
    for response, prefix in ((mounted, "/registrar"), (plain, "")):
        body = response.json()
        assert body["registration_client_uri"] == f"http://testserver{prefix}/oauth2/register/{body['registration_id']}"


def test_purpose_defaults_to_the_tokens(client, token):
    row, plaintext = token
    response = post(client, low_body(purpose=None), plaintext)
    assert response.status_code == 201
    assert Client.objects.get().purpose == row.purpose


def test_201_needs_the_idp_slow_or_down_answers_202(client, catalogue, owner):
    from tests.factories import IdPFactory

    # An RFC 7591 IdP that is down: nothing listens on port 9 of loopback (connection refused).
    IdPFactory(
        name="down-idp",
        kind="rfc7591",
        is_default=True,
        config={
            "issuer": "http://127.0.0.1:9",
            "registration_endpoint": "http://127.0.0.1:9/reg",
            "token_endpoint": "http://127.0.0.1:9/token",
        },
        secrets={"initial_access_token": "iat"},
    )
    _, plaintext = make_token(owner)
    response = post(client, low_body(), plaintext)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "provisioning"
    created = Client.objects.get()
    assert created.state == ClientState.PROVISIONING
    assert OutboxEntry.objects.get().status == OutboxStatus.PENDING  # left for the workers


# --- 202 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "tier", "approvals", "reason"),
    [
        ({"scope": "tickets:write"}, "medium", 1, "medium sensitivity"),
        ({"internal_only": False}, "medium", 1, "not internal-only"),
        ({"scope": "repo:write"}, "high", 2, "high sensitivity"),
        ({"scope": "tickets:read docs:read crm:read tickets:write"}, "medium", 1, "4 scopes requested"),
    ],
)
def test_review_tiers_answer_202_pending(client, token, overrides, tier, approvals, reason):
    row, plaintext = token
    before = counts()
    response = post(client, low_body(**overrides), plaintext)

    assert response.status_code == 202, response.content
    body = response.json()
    reg = RegistrationRequest.objects.get()
    assert body["status"] == "pending"
    assert body["registration_id"] == reg.public_id
    assert body["risk_tier"] == tier and body["approvals_needed"] == approvals
    assert any(reason in r for r in body["reasons"])
    assert body["registration_access_token"].startswith("rrat_")
    assert reg.state == RequestState.PENDING and reg.client is None and reg.risk_tier == tier
    assert reg.registration_access_token_hash
    row.refresh_from_db()
    assert row.uses == 1  # a pending registration consumes a use
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    assert AuditEvent.objects.get(action="registration.pending").after["verdict"]["tier"] == tier


@pytest.mark.postgres_only  # the hand-written single-statement path (portal.audit.event_insert)
def test_202_path_query_count(client, token, django_assert_num_queries):
    _, plaintext = token
    post(client, low_body(scope="tickets:write"), plaintext)  # warm caches (policy, content types)
    # The token with its owner's live-client count (catalogue and default IdP are cached per process), then
    # ONE statement: token use, request INSERT and the audit event INSERT (no transaction of its own, so no
    # BEGIN/COMMIT either outside a test). Nothing per scope or per reason, and no shared row: the event takes
    # no lock (the audit log's sequencer places it later).
    with django_assert_num_queries(2) as ctx:
        response = post(client, low_body(scope="tickets:write docs:read"), plaintext)
    assert response.status_code == 202
    write = ctx.captured_queries[1]["sql"]
    assert all(
        table in write
        for table in ("approvals_initialaccesstoken", "approvals_registrationrequest", "portal_auditevent")
    )
    assert "portal_audithead" not in write
    reg = RegistrationRequest.objects.get(public_id=response.json()["registration_id"])
    assert reg.state == RequestState.PENDING
    assert AuditEvent.objects.latest("id").object_id == reg.public_id


@pytest.mark.postgres_only  # the hand-written single-statement path (portal.audit.event_insert)
def test_400_path_query_count(client, token, django_assert_num_queries):
    _, plaintext = token
    post(client, low_body(scope="nope:x"), plaintext)
    with django_assert_num_queries(2):  # the token, then the refused row and its audit event in one statement
        response = post(client, low_body(scope="nope:y"), plaintext)
    assert response.status_code == 400


# --- 400: policy refusals ----------------------------------------------------------------------------


def _assert_refused_only(before, row, uses_before=0):
    """A refused request leaves exactly its refused row and one audit event; the token keeps its uses."""
    after = counts()
    assert after == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    reg = RegistrationRequest.objects.latest("pk")
    assert reg.state == RequestState.REFUSED and reg.client is None and reg.registration_access_token_hash is None
    assert AuditEvent.objects.latest("id").action == "registration.refused"
    if row is not None:
        row.refresh_from_db()
        assert row.uses == uses_before
    return reg


@pytest.mark.parametrize(
    ("overrides", "error", "fragment", "code"),
    [
        (
            {"scope": "tickets:read nope:admin"},
            "invalid_client_metadata",
            "'nope:admin' is not in the scope catalogue",
            "unknown_scope",
        ),
        (
            {"scope": "db:prod:read"},
            "invalid_client_metadata",
            "'db:prod:read' is not allowed by the initial access token",
            "scope_above_ceiling",
        ),
    ],
)
def test_policy_refusals_answer_400_and_keep_a_refused_row(client, token, overrides, error, fragment, code):
    row, plaintext = token
    before = counts()
    response = post(client, low_body(**overrides), plaintext)
    _assert_rfc7591_error(response, 400, error, fragment)
    reg = _assert_refused_only(before, row)
    assert reg.reasons[0]["code"] == code and reg.error == error and reg.risk_tier == "refused"
    assert reg.token == row and reg.owner == row.owner


def test_every_reason_is_named(client, token):
    _, plaintext = token
    response = post(client, low_body(scope="nope:one db:prod:read"), plaintext)
    body = _assert_rfc7591_error(response, 400, "invalid_client_metadata")
    assert "'nope:one' is not in the scope catalogue" in body["error_description"]
    assert "'db:prod:read' is not allowed" in body["error_description"]


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        (
            {"redirect_uris": ["https://*.example.com/cb"], "grant_types": ["authorization_code"]},
            "invalid_redirect_uri",
            "wildcard",
        ),
        (
            {"redirect_uris": ["http://agent.example.com/cb"], "grant_types": ["authorization_code"]},
            "invalid_redirect_uri",
            "uses http",
        ),
        (
            {"redirect_uris": ["https://a.example.com/cb#frag"], "grant_types": ["authorization_code"]},
            "invalid_redirect_uri",
            "fragment",
        ),
        (
            {"token_endpoint_auth_method": "client_secret_basic", "jwks": None},
            "invalid_client_metadata",
            "shared secret",
        ),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "invalid_client_metadata", "symmetric"),
        ({"grant_types": ["password"]}, "invalid_client_metadata", "password grant"),
        ({"requested_ttl": "forever"}, "invalid_client_metadata", "requested_ttl"),
    ],
)
def test_metadata_refusals_answer_400(client, token, overrides, error, fragment):
    row, plaintext = token
    before = counts()
    response = post(client, low_body(**overrides), plaintext)
    _assert_rfc7591_error(response, 400, error, fragment)
    _assert_refused_only(before, row)


def test_private_key_in_jwks_is_refused(client, token):
    from tests.approvals.intake_support import EC_KEY

    _, plaintext = token
    response = post(client, low_body(jwks={"keys": [EC_KEY.as_dict(private=True)]}), plaintext)
    _assert_rfc7591_error(response, 400, "invalid_client_metadata", "private key material")


def test_shared_secret_allowed_when_policy_allows_it(client, token, admin_user):
    _, plaintext = token
    policy_publish(actor=Actor.user(admin_user), thresholds={"allow_shared_secret": True}, note="allow secrets")
    response = post(client, low_body(token_endpoint_auth_method="client_secret_basic", jwks=None), plaintext)
    # allowed, but a shared secret is never "low": it goes to review
    assert response.status_code == 202
    assert "not key-based" in " ".join(response.json()["reasons"])
    assert response.json()["policy_version"] == 2


def test_owner_inactive_is_refused(client, catalogue, idp):
    gone = UserFactory(username="gone", roles=["owner"])
    _, plaintext = make_token(gone)
    gone.is_active = False
    gone.save()
    before = counts()
    response = post(client, low_body(), plaintext)
    _assert_rfc7591_error(response, 400, "invalid_client_metadata", "owner is not active")
    _assert_refused_only(before, None)


def test_owner_deactivated_by_directory_is_refused(client, catalogue, idp, owner):
    _, plaintext = make_token(owner)
    owner.deactivated_at = timezone.now()
    owner.save()
    response = post(client, low_body(), plaintext)
    _assert_rfc7591_error(response, 400, "invalid_client_metadata", "owner is not active")


def test_owner_over_quota_is_refused(client, token, owner, idp, admin_user):
    row, plaintext = token
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_live_clients_per_owner": 2})
    ClientFactory(owner=owner, idp=idp)
    ClientFactory(owner=owner, idp=idp, state=ClientState.RETIRED)  # ended clients do not count
    assert post(client, low_body(), plaintext).status_code == 201
    before = counts()
    response = post(client, low_body(), plaintext)
    _assert_rfc7591_error(response, 400, "invalid_client_metadata", "already has 2 live clients; the limit is 2")
    _assert_refused_only(before, row, uses_before=1)


def test_internal_only_token_refuses_external_client(client, catalogue, idp, owner):
    row, plaintext = make_token(owner, internal_only=True)
    response = post(client, low_body(internal_only=False), plaintext)
    _assert_rfc7591_error(response, 400, "invalid_client_metadata", "allows only internal-only clients")


def test_ttl_is_clamped_to_the_token_and_tier(client, catalogue, idp, owner):
    _, plaintext = make_token(owner, max_ttl_seconds=600)
    response = post(client, low_body(requested_ttl=7 * 86400), plaintext)
    assert response.status_code == 201
    created = Client.objects.get()
    assert (created.expires_at - created.created_at).total_seconds() <= 601
    reg = RegistrationRequest.objects.get()
    assert reg.granted_ttl == 600 and reg.requested_ttl == 7 * 86400
    assert {r["code"] for r in reg.reasons} == {"ttl_clamped", "ttl_clamped_to_ceiling"}


# --- 401 ---------------------------------------------------------------------------------------------


def _assert_401(response, fragment: str):
    _assert_rfc7591_error(response, 401, "invalid_token", fragment)
    assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"revoked_at": timezone.now()}, "revoked"),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "expired"),
        ({"uses": 10}, "used up"),
    ],
)
def test_dead_tokens_get_401_counted_then_folded_into_one_audit_event(client, token, change, fragment):
    row, plaintext = token
    InitialAccessToken.objects.filter(pk=row.pk).update(**change)
    before = counts()
    _assert_401(post(client, low_body(), plaintext), fragment)
    assert counts() == before  # nothing on the audit chain from the request path
    [event] = fold_refusals()
    assert event.action == "registration.unauthorized" and fragment in event.reason
    assert event.after["credential_prefix"] == plaintext[:12] and event.after["count"] == 1
    assert plaintext not in str(event.after)


def test_missing_and_unknown_tokens_get_401(client, setup):
    before = counts()
    _assert_401(post(client, low_body()), "initial access token (Authorization: Bearer) or a software_statement")
    _assert_401(post(client, low_body(), "rat_not_a_real_token"), "not a valid initial access token")
    _assert_401(post(client, low_body(), "rrat_not_a_real_token"), "not a valid registration access token")
    assert counts() == before
    events = fold_refusals()
    assert sorted(e.after["credential_prefix"] for e in events) == ["", "rat_not_a_re", "rrat_not_a_r"]
    assert {e.action for e in events} == {"registration.unauthorized"}


def test_token_max_uses_is_never_exceeded(client, catalogue, idp, owner):
    row, plaintext = make_token(owner, max_uses=2)
    assert post(client, low_body(), plaintext).status_code == 201
    assert post(client, low_body(scope="tickets:write"), plaintext).status_code == 202
    _assert_401(post(client, low_body(), plaintext), "used up")
    row.refresh_from_db()
    assert row.uses == 2 == RegistrationRequest.objects.exclude(state="refused").count()


def test_refused_attempts_do_not_use_up_the_token(client, catalogue, idp, owner):
    row, plaintext = make_token(owner, max_uses=1)
    for _ in range(3):
        assert post(client, low_body(scope="nope:x"), plaintext).status_code == 400
    assert post(client, low_body(), plaintext).status_code == 201
    row.refresh_from_db()
    assert row.uses == 1


def test_conditional_use_loses_a_race_with_401_and_writes_nothing(client, token, monkeypatch):
    """The token was valid when read but another registration took the last use before ours committed."""
    from approvals.oauth2 import credentials

    row, plaintext = token
    real = credentials.requester_authenticate

    def authenticate_then_lose_race(**kwargs):
        requester = real(**kwargs)
        InitialAccessToken.objects.filter(pk=row.pk).update(uses=row.max_uses)
        return requester

    monkeypatch.setattr(credentials, "requester_authenticate", authenticate_then_lose_race)
    before = counts()
    _assert_401(post(client, low_body(), plaintext), "used up")
    assert counts() == before and refusals_counted() == 1


# --- 400/413/405: malformed requests -----------------------------------------------------------------


def test_non_json_body_is_400(client, token):
    _, plaintext = token
    before = counts()
    _assert_rfc7591_error(
        post(client, "purpose=x", plaintext, content_type="application/x-www-form-urlencoded"),
        400,
        "invalid_client_metadata",
        "must be JSON",
    )
    _assert_rfc7591_error(post(client, "{not json", plaintext), 400, "invalid_client_metadata", "not valid JSON")
    assert counts() == before  # nothing authenticated yet, nothing recorded


@pytest.mark.parametrize("field", ["client_name", "purpose", "scope", "software_id", "unknown_extension"])
def test_unpaired_surrogate_escape_is_400_and_writes_nothing(client, token, field):
    """JSON lets a \\u escape name half a surrogate pair; no UTF-8 column can store it (it was a 500)."""
    row, plaintext = token
    before = counts()
    raw = json.dumps(low_body(**{field: "agent \ud800 x"}))  # ensure_ascii: the body carries "\\ud800"
    assert "\\ud800" in raw
    response = post(client, raw, plaintext)
    _assert_rfc7591_error(response, 400, "invalid_client_metadata", "unpaired surrogate")
    assert counts() == before
    row.refresh_from_db()
    assert row.uses == 0


def test_an_escaped_surrogate_pair_is_an_ordinary_character(client, token):
    _, plaintext = token
    raw = json.dumps(low_body(client_name="agent \U0001f916", scope="tickets:write"))
    assert "\\ud83e\\udd16" in raw  # the robot emoji, escaped as a valid pair
    response = post(client, raw, plaintext)
    assert response.status_code == 202, response.content
    reg = RegistrationRequest.objects.get(public_id=response.json()["registration_id"])
    assert reg.client_name == "agent \U0001f916"


def test_storable_replaces_what_postgresql_cannot_store():
    from approvals.oauth2.storable import storable

    value = {"a\x00": ["x\x00y", "ok \U0001f916"], "n": float("inf")}
    assert storable(value) == {"a\ufffd": ["x\ufffdy", "ok \U0001f916"], "n": None}


def test_json_that_is_not_an_object_is_refused(client, token):
    row, plaintext = token
    before = counts()
    _assert_rfc7591_error(post(client, "[1, 2]", plaintext), 400, "invalid_client_metadata", "JSON object")
    _assert_refused_only(before, row)


def test_oversized_body_is_413(client, token, settings):
    _, plaintext = token
    settings.REGISTRAR_MAX_BODY_BYTES = 2048
    before = counts()
    response = post(client, low_body(client_name="x" * 4000), plaintext)
    _assert_rfc7591_error(response, 413, "invalid_client_metadata", "larger than 2048 bytes")
    assert counts() == before


def test_default_limit_is_64_kib(client, token):
    _, plaintext = token
    response = post(client, low_body(padding="x" * 65 * 1024), plaintext)
    assert response.status_code == 413


def test_get_on_register_is_405(client, setup):
    response = client.get("/oauth2/register")
    assert response.status_code == 405 and response.json()["error"] == "invalid_request"


API_CSP = "default-src 'none'; frame-ancestors 'none'"


def test_registration_endpoints_answer_without_the_browser_middleware(client, token, owner):
    """Sessions, authentication, CSRF and the page CSP stay out of the agents' endpoints: a browser session
    cookie authenticates nothing there, and the JSON carries the API security headers."""
    _, plaintext = token
    client.force_login(owner)  # a session cookie rides along, as from a logged-in browser
    response = post(client, low_body(scope="tickets:write"), plaintext)
    assert response.status_code == 202
    assert response["Content-Security-Policy"] == API_CSP
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Request-ID"]
    assert "Cookie" not in response.get("Vary", "") and not response.cookies
    assert not hasattr(response.wsgi_request, "user") and not hasattr(response.wsgi_request, "session")

    before = counts()
    response = post(client, low_body())  # no bearer: the session is not a credential
    assert response.status_code == 401 and response["Content-Security-Policy"] == API_CSP
    assert counts() == before and refusals_counted() == 1  # the refused credential is counted, nothing else

    manage = client.get(f"/oauth2/register/{RegistrationRequest.objects.latest('pk').public_id}")
    assert manage.status_code == 401 and manage["Content-Security-Policy"] == API_CSP
    assert client.get("/oauth2/registerx").status_code == 404


def test_pages_keep_the_page_middleware(client, owner):
    client.force_login(owner)
    response = client.get("/")
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert response.wsgi_request.user == owner


# --- 429 ---------------------------------------------------------------------------------------------


def test_rate_limit_per_token_answers_429_with_retry_after(client, token, settings):
    _, plaintext = token
    settings.REGISTRAR_REGISTER_RATE_PER_TOKEN = "2/m"
    assert post(client, low_body(scope="nope:x"), plaintext).status_code == 400
    assert post(client, low_body(scope="nope:x"), plaintext).status_code == 400
    before = counts()
    response = post(client, low_body(), plaintext)
    _assert_rfc7591_error(response, 429, "too_many_requests", "per token")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert counts() == before
    # another credential from the same address is not affected
    other, other_plaintext = make_token(other_owner := UserFactory(username="other-owner"))
    assert other_owner and post(client, low_body(), other_plaintext).status_code == 201


def test_rate_limit_per_address_answers_429(client, token, settings):
    _, plaintext = token
    settings.REGISTRAR_REGISTER_RATE_PER_IP = "1/h"
    assert post(client, low_body(), "rat_unknown", REMOTE_ADDR="10.0.0.9").status_code == 401
    response = post(client, low_body(), plaintext, REMOTE_ADDR="10.0.0.9")
    _assert_rfc7591_error(response, 429, "too_many_requests", "per address")
    assert int(response["Retry-After"]) <= 3600
    assert post(client, low_body(), plaintext, REMOTE_ADDR="10.0.0.10").status_code == 201


# --- policy versions ---------------------------------------------------------------------------------


def test_verdicts_record_the_policy_version_in_force(client, token, admin_user):
    _, plaintext = token
    assert post(client, low_body(), plaintext).status_code == 201
    policy_publish(actor=Actor.user(admin_user), thresholds={"low_max_scopes": 0}, note="everything reviewed")
    assert post(client, low_body(), plaintext).status_code == 202
    first, second = RegistrationRequest.objects.order_by("pk")
    assert (first.policy_version, second.policy_version) == (1, 2)
    assert Policy.objects.get(is_active=True).version == 2


def test_outbox_create_was_queued_in_the_same_transaction(client, token):
    _, plaintext = token
    post(client, low_body(), plaintext)
    entry = OutboxEntry.objects.get()
    assert entry.operation == OutboxOperation.CREATE and entry.client == Client.objects.get()
