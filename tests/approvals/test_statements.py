"""Software statements (RFC 7591 §2.3): verification and registration through them, with real signed JWTs."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from approvals.models import RegistrationRequest, TrustedIssuer
from approvals.statements import StatementError, subject_matches, verify_software_statement
from inventory.models import Client
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    counts,
    fold_refusals,
    low_body,
    post,
)
from tests.factories import UserFactory

ISSUER = "https://ci.example.com"
AUDIENCE = "https://registrar.example.com/oauth2/register"
ISSUER_KEY = RSAKey.generate_key(2048, parameters={"kid": "ci-1"})
SPIFFE_KEY = ECKey.generate_key("P-256", parameters={"kid": "spire-1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "ci-1"})

pytestmark = pytest.mark.django_db


def _jwks(key) -> dict:
    return {"keys": [key.as_dict(private=False)]}


@pytest.fixture
def ci_owner(db):
    return UserFactory(username="ci-owner", roles=["owner"])


@pytest.fixture
def oidc_rule(catalogue, idp, ci_owner):
    return TrustedIssuer.objects.create(
        name="CI",
        kind="oidc",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=_jwks(ISSUER_KEY),
        subject="repo:acme/agents:*",
        owner=ci_owner,
        purpose="CI agents of acme/agents",
        allowed_scopes=["tickets:read", "docs:read", "tickets:write"],
        max_ttl_seconds=3600,
        internal_only=True,
    )


@pytest.fixture
def spiffe_rule(catalogue, idp, ci_owner):
    return TrustedIssuer.objects.create(
        name="SPIRE prod",
        kind="spiffe",
        issuer="prod.example.org",
        audience="registrar",
        jwks=_jwks(SPIFFE_KEY),
        subject="spiffe://prod.example.org/ns/agents/*",
        owner=ci_owner,
        purpose="Workloads in the agents namespace",
        allowed_scopes=["tickets:read"],
        max_ttl_seconds=900,
        internal_only=True,
    )


def sign(claims: dict | None = None, *, key=ISSUER_KEY, alg: str = "RS256", drop: tuple[str, ...] = (), **extra) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "repo:acme/agents:ref:refs/heads/main",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,  # a statement is accepted once: each one carries its own id
    }
    payload.update(claims or {})
    payload.update(extra)
    for name in drop:
        payload.pop(name, None)
    header = {"alg": alg, "kid": key.kid} if key.kid else {"alg": alg}
    return jwt.encode(header, payload, key, algorithms=[alg])


def sign_escaped(**claims) -> str:
    """Like sign(), with the payload JSON escaped to ASCII: the only way to carry half a surrogate pair (a JWT
    library encoding UTF-8 cannot)."""
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "repo:acme/agents:ref:refs/heads/main",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jws.serialize_compact({"alg": "RS256", "kid": ISSUER_KEY.kid}, json.dumps(payload).encode(), ISSUER_KEY)


def _assert_error(response, error: str, fragment: str):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body == {"error": error, "error_description": body["error_description"]}
    assert body["error"] == error and fragment in body["error_description"]


# --- through the endpoint ----------------------------------------------------------------------------


def test_statement_registers_for_the_rules_owner_and_purpose(client, oidc_rule, ci_owner):
    statement = sign({"client_name": "from-statement", "scope": "tickets:read", "software_id": "acme-summariser"})
    body = low_body(client_name="from-body", scope="tickets:read docs:read", purpose="the body's purpose")
    body["software_statement"] = statement

    response = post(client, body)

    assert response.status_code == 201, response.content
    answer = response.json()
    created = Client.objects.get()
    # statement values win over the body (RFC 7591 §2.3); the rule decides owner and purpose
    assert answer["client_name"] == "from-statement" == created.name
    assert answer["scope"] == "tickets:read" and answer["software_id"] == "acme-summariser"
    assert created.owner == ci_owner and created.purpose == "CI agents of acme/agents"
    assert created.created_via == "software_statement"
    reg = RegistrationRequest.objects.get()
    assert reg.issuer == oidc_rule and reg.statement_subject == "repo:acme/agents:ref:refs/heads/main"
    assert "software_statement" not in reg.metadata
    event = AuditEvent.objects.get(action="registration.accepted")
    assert event.after["issuer_id"] == oidc_rule.pk and event.actor_label == reg.statement_subject


def test_statement_ttl_is_clamped_to_the_rule(client, oidc_rule):
    response = post(client, low_body(requested_ttl=86400, software_statement=sign({"scope": "tickets:read"})))
    assert response.status_code == 201
    assert RegistrationRequest.objects.get().granted_ttl == 3600


def test_scope_above_the_rules_ceiling_is_unapproved(client, oidc_rule):
    before = counts()
    response = post(client, low_body(software_statement=sign({"scope": "crm:read"})))
    _assert_error(response, "unapproved_software_statement", "'crm:read' is not allowed by the trusted issuer rule")
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    assert RegistrationRequest.objects.get().state == "refused"


def test_spiffe_jwt_svid_registers_with_its_spiffe_id(client, spiffe_rule):
    spiffe_id = "spiffe://prod.example.org/ns/agents/sa/summariser"
    statement = sign({"sub": spiffe_id, "aud": ["registrar"]}, key=SPIFFE_KEY, alg="ES256", drop=("iss",))
    response = post(client, low_body(software_statement=statement))
    assert response.status_code == 201, response.content
    created = Client.objects.get()
    assert created.spiffe_id == spiffe_id and created.purpose == "Workloads in the agents namespace"
    assert RegistrationRequest.objects.get().granted_ttl == 900


@pytest.mark.parametrize(
    ("statement", "error", "fragment"),
    [
        (lambda: sign(key=OTHER_KEY), "invalid_software_statement", "signature"),
        (lambda: sign(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "invalid_software_statement", "exp"),
        (lambda: sign(aud="https://someone-else.example"), "invalid_software_statement", "aud"),
        (lambda: sign(drop=("exp",)), "invalid_software_statement", "exp"),
        (lambda: sign(drop=("iat",)), "invalid_software_statement", "iat"),
        (lambda: sign(iat=int(time.time()) + 3600), "invalid_software_statement", "future"),
        (lambda: sign(iss="https://unknown.example.com"), "unapproved_software_statement", "not a trusted issuer"),
        (
            lambda: sign(sub="repo:evil/agents:ref:main"),
            "unapproved_software_statement",
            "not allowed by any trusted issuer rule",
        ),
        (lambda: sign(key=OctKey.import_key("s" * 32), alg="HS256"), "invalid_software_statement", "HS256"),
        (lambda: "not-a-jwt", "invalid_software_statement", "three dot-separated parts"),
        (lambda: "e30.e30.", "invalid_software_statement", "alg"),
        (lambda: 42, "invalid_software_statement", "JWT string"),
        # a correctly signed statement whose subject holds half a surrogate pair (no column can store it)
        (lambda: sign_escaped(sub="repo:acme/agents:\ud800"), "invalid_software_statement", "unpaired surrogate"),
        (lambda: sign_escaped(client_name="x\udfff"), "invalid_software_statement", "unpaired surrogate"),
    ],
)
def test_bad_statements_are_refused_with_the_rfc_7591_code(client, oidc_rule, statement, error, fragment):
    before = counts()
    response = post(client, low_body(software_statement=statement()))
    _assert_error(response, error, fragment)
    # nothing registered or chained on the request path; the attempt reaches the audit trail with the fold
    assert counts() == before
    [event] = fold_refusals()
    assert event.action == "registration.statement_rejected" and event.after["error"] == error
    assert event.after["count"] == 1


def test_spiffe_wrong_trust_domain_is_unapproved(client, spiffe_rule):
    statement = sign({"sub": "spiffe://dev.example.org/ns/agents/x", "aud": "registrar"}, key=SPIFFE_KEY, alg="ES256")
    _assert_error(
        post(client, low_body(software_statement=statement)), "unapproved_software_statement", "trusted issuer"
    )


def test_disabled_issuer_is_unapproved(client, oidc_rule):
    TrustedIssuer.objects.update(enabled=False)
    _assert_error(post(client, low_body(software_statement=sign())), "unapproved_software_statement", "not a trusted")


# --- the verifier itself -----------------------------------------------------------------------------


def test_exact_rule_beats_prefix_rule(oidc_rule, ci_owner):
    exact = TrustedIssuer.objects.create(
        name="CI main",
        kind="oidc",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=_jwks(ISSUER_KEY),
        subject="repo:acme/agents:ref:refs/heads/main",
        owner=ci_owner,
        purpose="main branch agent",
    )
    assert verify_software_statement(sign()).issuer == exact
    assert verify_software_statement(sign(sub="repo:acme/agents:ref:refs/heads/dev")).issuer == oidc_rule


def test_statement_metadata_excludes_jwt_claims(oidc_rule):
    verified = verify_software_statement(sign({"scope": "tickets:read", "jti": "abc"}))
    assert verified.metadata == {"scope": "tickets:read"} and verified.jti == "abc"


def test_broken_issuer_jwks_is_unapproved(oidc_rule):
    TrustedIssuer.objects.update(jwks={"keys": [{"kty": "RSA"}]})
    with pytest.raises(StatementError) as exc:
        verify_software_statement(sign())
    assert exc.value.error == "unapproved_software_statement"


def test_subject_rules():
    assert subject_matches("spiffe://a/ns/*", "spiffe://a/ns/x")
    assert not subject_matches("spiffe://a/ns/*", "spiffe://a/other")
    assert subject_matches("exact", "exact") and not subject_matches("exact", "exact2")


def test_client_jwks_in_statement_must_be_public(client, oidc_rule):
    from tests.approvals.intake_support import EC_KEY

    statement = sign({"scope": "tickets:read", "jwks": {"keys": [EC_KEY.as_dict(private=True)]}})
    _assert_error(post(client, low_body(software_statement=statement)), "invalid_client_metadata", "private key")
    assert PUBLIC_JWKS  # the body's public keys were overridden by the statement's


def test_statements_are_rate_limited_per_workload(client, oidc_rule, settings):
    settings.REGISTRAR_REGISTER_RATE_PER_TOKEN = "1/m"
    assert post(client, low_body(software_statement=sign({"scope": "tickets:read"}))).status_code == 201
    response = post(client, low_body(software_statement=sign({"scope": "tickets:read"})))
    assert response.status_code == 429 and response.json()["error"] == "too_many_requests"
    other = sign({"scope": "tickets:read"}, sub="repo:acme/agents:ref:refs/heads/other")
    assert post(client, low_body(software_statement=other)).status_code == 201
