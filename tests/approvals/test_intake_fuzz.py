"""Hypothesis-generated requests to /oauth2/register: never a 5xx, always an RFC 7591/6750 body, nothing half-written."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals.models import RegistrationRequest
from inventory.models import Client
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    counts,
    make_token,
    post,
    refusals_counted,
)

pytestmark = pytest.mark.django_db

FIELDS = [
    "redirect_uris",
    "grant_types",
    "response_types",
    "token_endpoint_auth_method",
    "application_type",
    "jwks",
    "jwks_uri",
    "scope",
    "client_name",
    "client_uri",
    "contacts",
    "software_id",
    "software_version",
    "purpose",
    "requested_ttl",
    "audiences",
    "internal_only",
    "software_statement",
    "client_id",
    "logo_uri",
]
SCOPES = ["tickets:read", "docs:read", "tickets:write", "repo:write", "db:prod:read", "nope:x", "", " ", "a\x00b"]

text = st.text(st.characters(exclude_categories=[]), max_size=40)  # surrogates too: JSON can escape half a pair
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
field_values = {
    "scope": st.lists(st.sampled_from(SCOPES), max_size=4).map(" ".join) | json_values,
    "jwks": st.just(PUBLIC_JWKS) | json_values,
    "internal_only": st.booleans() | json_values,
    "requested_ttl": st.integers(-10, 10**9) | json_values,
    "redirect_uris": st.lists(st.sampled_from(["https://a.example/cb", "http://127.0.0.1/cb", "https://*.x/cb", "x"]))
    | json_values,
    "token_endpoint_auth_method": st.sampled_from(["private_key_jwt", "none", "client_secret_basic", "x"])
    | json_values,
}
bodies = (
    st.fixed_dictionaries(
        {"purpose": st.just("fuzzing the intake endpoint"), "jwks": st.just(PUBLIC_JWKS)},
        optional={name: field_values.get(name, json_values) for name in FIELDS if name not in ("purpose", "jwks")},
    )
    | st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=6)
    | json_values
)


@pytest.fixture
def fuzz_setup(catalogue, idp, owner, settings):
    settings.REGISTRAR_REGISTER_RATE_PER_TOKEN = "0"
    settings.REGISTRAR_REGISTER_RATE_PER_IP = "0"
    return make_token(owner, max_uses=10000)


def _check(response, before):
    assert response.status_code in (201, 202, 400), response.content
    after = counts()
    body = response.json()
    if response.status_code == 400:
        assert set(body) == {"error", "error_description"}
        assert body["error"] in {
            "invalid_client_metadata",
            "invalid_redirect_uri",
            "invalid_software_statement",
            "unapproved_software_statement",
        }
        assert body["error_description"]
        if body["error_description"].startswith("the request body"):  # not JSON (e.g. Infinity): nothing ran
            assert after == before
            return
        # a refused request leaves its refused row and one audit event, or (a bad statement) just the event
        grew = after["requests"] - before["requests"]
        assert grew in (0, 1) and after["audit"] == before["audit"] + 1
        assert after["clients"] == before["clients"] and after["outbox"] == before["outbox"]
        if grew:
            assert RegistrationRequest.objects.latest("pk").state == "refused"
    elif response.status_code == 202:
        assert body["status"] == "pending" and after["requests"] == before["requests"] + 1
        assert after["clients"] == before["clients"]
    else:
        assert after["clients"] == before["clients"] + 1 and after["requests"] == before["requests"] + 1
        assert Client.objects.latest("pk").state == "active"


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=bodies)
def test_fuzzed_json_bodies(client, fuzz_setup, body):
    _, plaintext = fuzz_setup
    before = counts()
    _check(post(client, json.dumps(body), plaintext), before)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    raw=st.binary(max_size=200),
    content_type=st.sampled_from(["application/json", "text/plain", "application/jose+json"]),
)
def test_fuzzed_raw_bodies(client, fuzz_setup, raw, content_type):
    _, plaintext = fuzz_setup
    before = counts()
    response = post(client, raw, plaintext, content_type=content_type)
    if response.status_code in (201, 202):  # some byte strings are valid JSON
        return
    _check(response, before)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(header=st.text(max_size=60))
def test_fuzzed_authorization_headers(client, fuzz_setup, header):
    before, counted = counts(), refusals_counted()
    response = client.post(
        "/oauth2/register",
        data=json.dumps({"purpose": "x" * 5}),
        content_type="application/json",
        HTTP_AUTHORIZATION=header,
    )
    assert response.status_code in (400, 401), response.content
    assert set(response.json()) == {"error", "error_description"}
    if response.status_code == 401:
        assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert counts() == before and refusals_counted() == counted + 1
