"""One censor for the audit chain and the logs: every kind of secret is hidden by both paths alike."""

from __future__ import annotations

import logging

import pytest

from portal.audit import Actor, audit_record
from portal.censor import CENSORED, censor, is_sensitive_key
from portal.logs import log_event
from portal.models import AuditEvent

SECRET = "s3cr3t-value-0123456789"
EC_PRIVATE = {"kty": "EC", "crv": "P-256", "x": "pub-x", "y": "pub-y", "d": SECRET}
RSA_PRIVATE = {
    "kty": "RSA",
    "n": "pub-n",
    "e": "AQAB",
    "d": SECRET,
    "p": SECRET,
    "q": SECRET,
    "dp": SECRET,
    "dq": SECRET,
    "qi": SECRET,
}

# (what, payload, the path to the secret inside it)
SECRETS = [
    ("client_secret", {"client_secret": SECRET}, ("client_secret",)),
    ("registration access token", {"registration_access_token": SECRET}, ("registration_access_token",)),
    ("initial access token", {"initial_access_token": SECRET}, ("initial_access_token",)),
    ("admin client secret", {"secrets": {"admin_client_secret": SECRET}}, ("secrets",)),
    ("admin token", {"config": {"admin_token": SECRET}}, ("config", "admin_token")),
    ("admin password", {"config": {"admin_password": SECRET}}, ("config", "admin_password")),
    ("IdP credentials", {"credentials": {"id": "x", "key": SECRET}}, ("credentials",)),
    ("Authorization header", {"headers": {"Authorization": f"Bearer {SECRET}"}}, ("headers", "Authorization")),
    ("refresh token", {"refresh_token": SECRET}, ("refresh_token",)),
    ("API key", {"apiKey": SECRET}, ("apiKey",)),
    ("password", {"password": SECRET}, ("password",)),
    ("EC private key (d)", {"jwks": {"keys": [EC_PRIVATE]}}, ("jwks", "keys", 0, "d")),
    ("RSA private members", {"jwk": RSA_PRIVATE}, ("jwk", "qi")),
    ("RSA prime p", {"jwk": RSA_PRIVATE}, ("jwk", "p")),
    ("private_key", {"private_key": SECRET}, ("private_key",)),
]


def _dig(value, path):
    for step in path:
        value = value[step]
    return value


@pytest.mark.parametrize(("what", "payload", "path"), SECRETS, ids=[s[0] for s in SECRETS])
def test_the_audit_chain_stores_no_secret(db, what, payload, path):
    event = audit_record(
        actor=Actor.system("t"), action="t.x", object_type="t", object_id=1, before=payload, after=payload
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert SECRET not in str(stored.before) + str(stored.after), what
    assert _dig(stored.after, path) == CENSORED


@pytest.mark.parametrize(("what", "payload", "path"), SECRETS, ids=[s[0] for s in SECRETS])
def test_the_logs_carry_no_secret(caplog, what, payload, path):
    with caplog.at_level(logging.INFO, logger="registrar.tests.censor"):
        log_event(logging.getLogger("registrar.tests.censor"), "t", **payload)
    (record,) = caplog.records
    assert SECRET not in record.getMessage(), what
    assert CENSORED in record.getMessage()


def test_public_values_pass_through_unchanged():
    public = {
        "token_endpoint": "https://idp.example/token",
        "token_endpoint_auth_method": "private_key_jwt",
        "client_secret_expires_at": 0,
        "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "pub-x", "y": "pub-y", "kid": "k1"}]},
        "scope": "tickets:read",
        "tokens": 3,
        "key": "social-app-client-key",
        "d": "not a JWK member outside a JWK",
        "password": "",  # empty: a reader may see that nothing was set
        "client_secret": None,
    }
    assert censor(public) == public


def test_secret_values_are_scrubbed_from_free_text():
    assert censor({"error": f"token {SECRET} is invalid"}, secret_values=[SECRET]) == {
        "error": f"token {CENSORED} is invalid"
    }


def test_a_connectors_extra_keys_are_sensitive_too():
    assert censor({"realm_signing": SECRET}, extra_keys={"realm_signing"}) == {"realm_signing": CENSORED}
    assert is_sensitive_key("realm_signing", {"realm_signing"}) and not is_sensitive_key("realm_signing")


def test_there_is_one_censor():
    """The audit module and the connectors use the portal's censor, not copies of their own."""
    import inventory.connectors as connectors
    import inventory.connectors.base as base
    import portal.audit as audit

    assert audit.censor is censor and base.censor is censor and connectors.censor is censor
