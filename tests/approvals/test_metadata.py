"""Tests for RFC 7591 client metadata validation, with real generated keys (no Django, no database)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from approvals.metadata import ClientMetadata, MetadataError, validate_client_metadata


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, auto_kid=True)


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


@pytest.fixture(scope="module")
def public_jwks(ec_key) -> dict:
    return {"keys": [ec_key.as_dict(private=False)]}


@pytest.fixture
def body(public_jwks) -> dict:
    """A minimal valid body: a confidential agent using private_key_jwt."""
    return {"purpose": "Summarise support tickets", "jwks": public_jwks}


def validate(body: dict, *, allow_shared_secret: bool = False) -> ClientMetadata:
    return validate_client_metadata(body, allow_shared_secret=allow_shared_secret)


def refuse(body: dict, *, allow_shared_secret: bool = False) -> MetadataError:
    with pytest.raises(MetadataError) as excinfo:
        validate(body, allow_shared_secret=allow_shared_secret)
    return excinfo.value


# --- defaults and the response ------------------------------------------------------------------------


def test_minimal_body_gets_agent_defaults(body, public_jwks):
    meta = validate(body)
    assert meta.grant_types == ("client_credentials",)
    assert meta.response_types == ()
    assert meta.token_endpoint_auth_method == "private_key_jwt"
    assert meta.application_type == "web"
    assert meta.internal_only is False
    assert meta.to_response_dict() == {
        "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "application_type": "web",
        "jwks": public_jwks,
        "purpose": "Summarise support tickets",
        "internal_only": False,
    }


def test_redirect_uris_default_to_authorization_code(body):
    meta = validate({**body, "redirect_uris": ["https://app.example.com/cb"]})
    assert meta.grant_types == ("authorization_code",)
    assert meta.response_types == ("code",)


def test_full_body_round_trips_to_the_response(body):
    full = {
        **body,
        "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "tickets:read wiki:read tickets:read",
        "client_name": "Ticket summariser",
        "client_uri": "https://app.example.com",
        "logo_uri": "https://app.example.com/logo.png",
        "tos_uri": "https://app.example.com/tos",
        "policy_uri": "https://app.example.com/privacy",
        "contacts": ["owner@example.com"],
        "software_id": "4NRB1-0XZABZI9E6-5SM3R",
        "software_version": "2.1",
        "requested_ttl": 7200,
        "audiences": ["https://api.example.com/tickets"],
        "internal_only": True,
        "some_future_field": {"ignored": True},
    }
    response = validate(full).to_response_dict()
    assert response["redirect_uris"] == ["https://app.example.com/cb"]
    assert response["scope"] == "tickets:read wiki:read"
    assert response["requested_ttl"] == 7200
    assert "some_future_field" not in response
    expected = {k: v for k, v in full.items() if k not in ("redirect_uris", "scope", "some_future_field")}
    assert {k: response[k] for k in expected} == expected
    json.dumps(response)  # storable and sendable as is


def test_response_copy_does_not_alias_internal_jwks(body):
    meta = validate(body)
    meta.to_response_dict()["jwks"]["keys"].clear()
    assert meta.jwks["keys"]


def test_json_null_counts_as_absent(body):
    meta = validate({**body, "client_name": None, "requested_ttl": None, "redirect_uris": None})
    assert meta.client_name is None
    assert meta.requested_ttl is None


def test_scope_is_split_and_deduplicated(body):
    assert validate({**body, "scope": "a:b c a:b"}).scope == ("a:b", "c")


def test_policy_fields_feed_the_registration_context(body):
    meta = validate({**body, "scope": "x y", "requested_ttl": 60, "internal_only": True})
    assert meta.policy_fields() == {
        "requested_scopes": ("x", "y"),
        "requested_ttl": 60,
        "redirect_uris": (),
        "application_type": "web",
        "token_endpoint_auth_method": "private_key_jwt",
        "internal_only": True,
    }


# --- keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: RSAKey.generate_key(2048),
        lambda: ECKey.generate_key("P-256"),
        lambda: ECKey.generate_key("P-384"),
        lambda: OKPKey.generate_key("Ed25519"),
    ],
)
def test_public_keys_are_accepted(body, make_key):
    public = make_key().as_dict(private=False)
    meta = validate({**body, "jwks": {"keys": [public]}})
    assert meta.jwks == {"keys": [public]}


@pytest.mark.parametrize(
    ("make_key", "members"),
    [
        (lambda: RSAKey.generate_key(2048), "d, p, q, dp, dq, qi"),
        (lambda: ECKey.generate_key("P-256"), "d"),
        (lambda: OKPKey.generate_key("Ed25519"), "d"),
    ],
)
def test_private_keys_are_refused(body, make_key, members):
    private = make_key().as_dict(private=True)
    error = refuse({**body, "jwks": {"keys": [private]}})
    assert error.error == "invalid_client_metadata"
    assert error.reasons == [f"jwks.keys[0] contains private key material ({members}); register only the public key"]


def test_symmetric_key_is_refused(body):
    error = refuse({**body, "jwks": {"keys": [OctKey.generate_key(256).as_dict()]}})
    assert error.reasons == [
        "jwks.keys[0] is a symmetric (oct) key; register only public asymmetric keys (RSA, EC, OKP)"
    ]


def test_private_key_among_public_ones_is_named_by_index(body, ec_key):
    keys = [ec_key.as_dict(private=False), ECKey.generate_key("P-256").as_dict(private=True)]
    error = refuse({**body, "jwks": {"keys": keys}})
    assert [r.split(" ")[0] for r in error.reasons] == ["jwks.keys[1]"]


def test_short_rsa_key_is_refused(body):
    with pytest.warns(Warning):  # joserfc itself warns about the size
        weak = RSAKey.generate_key(1024).as_dict(private=False)
    error = refuse({**body, "jwks": {"keys": [weak]}})
    assert error.reasons == ["jwks.keys[0] is a 1024-bit RSA key; at least 2048 bits are required"]


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ({"kty": "RSA", "e": "AQAB"}, "not a valid public JWK"),
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "is a 17-bit RSA key; at least 2048 bits are required"),
        ({"kty": "RSA", "n": "!!", "e": "AQAB"}, "not a valid public JWK"),
        ({"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA"}, "not a valid public JWK"),
        ({"kty": "XYZ"}, "not a valid public JWK"),
        ({}, "not a valid public JWK"),
        ("not-a-key", "must be a JSON object"),
    ],
)
def test_malformed_keys_are_refused(body, key, fragment):
    error = refuse({**body, "jwks": {"keys": [key]}})
    assert len(error.reasons) == 1
    assert error.reasons[0].startswith("jwks.keys[0] ")
    assert fragment in error.reasons[0]


def test_ec_point_off_the_curve_is_refused(body, ec_key):
    public = ec_key.as_dict(private=False)
    error = refuse({**body, "jwks": {"keys": [{**public, "y": public["x"]}]}})
    assert "not a valid public JWK" in error.reasons[0]


def test_duplicate_kid_is_refused(body):
    a = ECKey.generate_key("P-256").as_dict(private=False)
    b = ECKey.generate_key("P-256").as_dict(private=False)
    error = refuse({**body, "jwks": {"keys": [{**a, "kid": "k1"}, {**b, "kid": "k1"}]}})
    assert error.reasons == ["jwks.keys[1] repeats kid 'k1'"]


@pytest.mark.parametrize(
    ("jwks", "reason"),
    [
        ([], 'jwks must be a JSON object with a "keys" list'),
        ({"keys": "x"}, 'jwks must be a JSON object with a "keys" list'),
        ({"keys": []}, "jwks.keys must contain at least one key"),
    ],
)
def test_jwks_shape_is_checked(body, jwks, reason):
    assert refuse({**body, "jwks": jwks}).reasons == [reason]


def test_jwks_and_jwks_uri_are_mutually_exclusive(body):
    error = refuse({**body, "jwks_uri": "https://app.example.com/jwks.json"})
    assert error.reasons == ["jwks and jwks_uri are mutually exclusive (RFC 7591 §2)"]


def test_jwks_uri_alone_is_accepted(body):
    meta = validate({"purpose": body["purpose"], "jwks_uri": "https://app.example.com/jwks.json"})
    assert meta.jwks_uri == "https://app.example.com/jwks.json"
    assert meta.jwks is None


@pytest.mark.parametrize("method", ["private_key_jwt", "self_signed_tls_client_auth"])
def test_key_methods_need_keys(method):
    error = refuse({"purpose": "abc", "token_endpoint_auth_method": method})
    assert error.reasons == [f"token_endpoint_auth_method {method} requires jwks or jwks_uri"]


def test_tls_client_auth_needs_no_jwks():
    assert validate({"purpose": "abc", "token_endpoint_auth_method": "tls_client_auth"}).jwks is None


# --- auth methods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "client_secret_jwt"])
def test_shared_secret_only_where_allowed(method):
    body = {"purpose": "abc", "token_endpoint_auth_method": method}
    error = refuse(body)
    assert error.reasons == [
        (
            f"token_endpoint_auth_method {method} uses a shared secret, which this deployment forbids; "
            "use private_key_jwt or mutual TLS"
        )
    ]
    assert validate(body, allow_shared_secret=True).token_endpoint_auth_method == method


def test_none_is_for_native_public_clients_with_authorization_code():
    native = {
        "purpose": "CLI login",
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1:8765/cb"],
    }
    meta = validate(native)
    assert (meta.grant_types, meta.token_endpoint_auth_method) == (("authorization_code",), "none")
    web = refuse({**native, "application_type": "web"})
    assert 'token_endpoint_auth_method "none" is only for native (public) clients' in web.reasons
    machine = refuse({**native, "grant_types": ["client_credentials"], "redirect_uris": None})
    assert machine.reasons == [
        'token_endpoint_auth_method "none" requires the authorization_code grant',
        'the client_credentials grant requires client authentication, not "none"',
    ]


def test_unknown_auth_method_is_refused(body):
    error = refuse({**body, "token_endpoint_auth_method": "magic"})
    assert error.reasons[0].startswith("token_endpoint_auth_method must be one of ")
    assert "got 'magic'" in error.reasons[0]


# --- grant and response types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"grant_types": ["authorization_code"]}, "redirect_uris is required for the authorization_code grant"),
        (
            {"grant_types": ["client_credentials"], "response_types": ["code"]},
            "response type 'code' requires grant type 'authorization_code'",
        ),
        (
            {"grant_types": ["authorization_code"], "response_types": [], "redirect_uris": ["https://a.example/cb"]},
            "grant type 'authorization_code' requires response type 'code'",
        ),
        ({"response_types": ["id_token"]}, "response type 'id_token' is not supported; use code"),
        (
            {"grant_types": ["password"]},
            "the password grant is not allowed (RFC 9700); agents must not handle user passwords",
        ),
        ({"grant_types": []}, "grant_types must not be empty"),
    ],
)
def test_grant_and_response_type_rules(body, fields, reason):
    assert reason in refuse({**body, **fields}).reasons


def test_implicit_grant_is_refused(body):
    error = refuse(
        {**body, "grant_types": ["implicit"], "response_types": ["token"], "redirect_uris": ["https://a.example/cb"]}
    )
    assert error.reasons == ["the implicit grant is not allowed (RFC 9700); use authorization_code with PKCE"]


def test_unknown_grant_type_is_refused(body):
    error = refuse({**body, "grant_types": ["urn:example:magic"]})
    assert error.reasons[0].startswith("grant type 'urn:example:magic' is not supported")


def test_extension_grants_are_accepted(body):
    grants = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
    assert validate({**body, "grant_types": grants}).grant_types == tuple(grants)


# --- redirect URIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.com/cb",
        "https://*.example.com/cb",
        "https://app.example.com/cb#x",
        "custom.scheme:/cb",
        "https:///cb",
    ],
)
def test_bad_redirect_uri_alone_is_invalid_redirect_uri(body, uri):
    error = refuse({**body, "redirect_uris": ["https://app.example.com/ok", uri]})
    assert error.error == "invalid_redirect_uri"
    assert len(error.reasons) >= 1
    assert all(repr(uri) in r for r in error.reasons)


def test_loopback_http_allowed_for_native_only(body):
    uri = "http://127.0.0.1:9000/cb"
    assert validate({**body, "application_type": "native", "redirect_uris": [uri]}).redirect_uris == (uri,)
    assert refuse({**body, "redirect_uris": [uri]}).error == "invalid_redirect_uri"


def test_redirect_and_other_problems_give_invalid_client_metadata(body):
    error = refuse({**body, "redirect_uris": ["http://app.example.com/cb"], "internal_only": "yes"})
    assert error.error == "invalid_client_metadata"
    assert len(error.reasons) == 2


def test_every_problem_is_listed_in_field_order():
    error = refuse(
        {
            "redirect_uris": ["http://a.example/cb", "https://*.b.example/cb"],
            "token_endpoint_auth_method": "client_secret_post",
            "scope": 'ok bad"scope',
            "requested_ttl": 0,
            "internal_only": 1,
        }
    )
    assert error.error == "invalid_client_metadata"
    assert error.reasons == [
        (
            "redirect URI 'http://a.example/cb' uses http; use https "
            "(plain http is allowed only for native apps on a loopback host)"
        ),
        "redirect URI 'https://*.b.example/cb' contains a wildcard '*'; register exact URIs",
        (
            "token_endpoint_auth_method client_secret_post uses a shared secret, which this deployment forbids; "
            "use private_key_jwt or mutual TLS"
        ),
        "scope contains invalid names 'bad\"scope' (RFC 6749 §3.3)",
        "purpose is required: say in 3 to 500 characters what this client is for",
        "requested_ttl must be between 1 and 31536000 seconds (one year), got 0",
        "internal_only must be true or false, got 1",
    ]
    assert str(error).startswith("invalid_client_metadata: redirect URI")
    assert error.description == "; ".join(error.reasons)


# --- field types: each wrong type gives one clear reason ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("redirect_uris", "https://app.example.com/cb", "redirect_uris must be a list of strings"),
        ("redirect_uris", [1], "redirect_uris must be a list of strings"),
        ("redirect_uris", [""], "redirect_uris[0] must not be empty"),
        ("grant_types", "client_credentials", "grant_types must be a list of strings"),
        ("response_types", "code", "response_types must be a list of strings"),
        ("token_endpoint_auth_method", 5, None),
        ("application_type", "ios", 'application_type must be "web" or "native", got \'ios\''),
        (
            "jwks_uri",
            "http://app.example.com/jwks",
            "jwks_uri must be an absolute https URI, got 'http://app.example.com/jwks'",
        ),
        (
            "scope",
            ["a", "b"],
            'scope must be a string of space-separated scope names, e.g. "read:tickets write:tickets"',
        ),
        ("scope", "a  b", "scope must be scope names separated by single spaces (found an empty name)"),
        ("client_name", 42, "client_name must be a string"),
        ("client_name", "x" * 201, "client_name must be 1 to 200 characters long, got 201"),
        ("client_name", "bad\x00name", "client_name must not contain control characters"),
        (
            "client_uri",
            "ftp://app.example.com",
            "client_uri must be an absolute https URI, got 'ftp://app.example.com'",
        ),
        ("logo_uri", "https://app.example.com/l.png#x", "logo_uri must not contain a fragment"),
        ("tos_uri", 3, "tos_uri must be a string"),
        ("policy_uri", "not a uri", "policy_uri must be an absolute https URI, got 'not a uri'"),
        ("contacts", "owner@example.com", "contacts must be a list of strings"),
        ("software_id", {"id": 1}, "software_id must be a string"),
        ("software_version", "", "software_version must not be empty"),
        ("purpose", 7, "purpose must be a string"),
        ("purpose", "  x ", "purpose must be 3 to 500 characters long, got 1"),
        ("purpose", "p" * 501, "purpose must be 3 to 500 characters long, got 501"),
        ("purpose", "ok\x07bell", "purpose must not contain control characters"),
        ("requested_ttl", "3600", "requested_ttl must be a whole number of seconds, got str"),
        ("requested_ttl", 3600.0, "requested_ttl must be a whole number of seconds, got float"),
        ("requested_ttl", True, "requested_ttl must be a whole number of seconds, got bool"),
        ("requested_ttl", 366 * 86400, "requested_ttl must be between 1 and 31536000 seconds (one year), got 31622400"),
        ("audiences", "https://api.example.com", "audiences must be a list of strings"),
        ("audiences", ["has space"], "audiences[0] must not contain whitespace"),
        ("internal_only", "true", "internal_only must be true or false, got 'true'"),
    ],
)
def test_wrong_field_values_give_clear_reasons(body, field, value, reason):
    if field == "jwks_uri":
        body = {k: v for k, v in body.items() if k != "jwks"}  # the two are mutually exclusive
    error = refuse({**body, field: value})
    assert len(error.reasons) == 1, error.reasons
    if reason is None:
        assert error.reasons[0].startswith(f"{field} must be one of")
    else:
        assert error.reasons == [reason]


def test_body_must_be_an_object():
    error = refuse(["not", "an", "object"])
    assert (error.error, error.reasons) == ("invalid_client_metadata", ["client metadata must be a JSON object"])


def test_multiline_purpose_is_fine(body):
    assert validate({**body, "purpose": "Line one\nline two"}).purpose == "Line one\nline two"


# --- narrowing (RFC 7592 PUT by the agent) ------------------------------------------------------------


@pytest.fixture
def current(body) -> ClientMetadata:
    return validate(
        {
            **body,
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["authorization_code"],
            "scope": "a b c",
            "requested_ttl": 7200,
            "audiences": ["https://api.example.com"],
            "internal_only": True,
        }
    )


def test_narrowing_and_key_rotation_are_allowed(current, rsa_key):
    rotated = dataclasses.replace(
        current, scope=("a",), requested_ttl=600, jwks={"keys": [rsa_key.as_dict(private=False)]}, client_name="New"
    )
    assert current.narrowing_problems(rotated) == []
    assert current.narrowing_problems(current) == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"scope": ("a", "d")}, "adds scopes d"),
        ({"requested_ttl": 7201}, "lengthens requested_ttl from 7200s to 7201s"),
        ({"requested_ttl": None}, "drops requested_ttl, which would fall back to the policy default"),
        ({"redirect_uris": ("https://evil.example/cb",)}, "adds redirect URIs https://evil.example/cb"),
        (
            {"audiences": ("https://api.example.com", "https://admin.example.com")},
            "adds audiences https://admin.example.com",
        ),
        ({"audiences": ()}, "removes the audience restriction"),
        ({"grant_types": ("authorization_code", "client_credentials")}, "adds grant types client_credentials"),
        ({"response_types": ("code", "token")}, "adds response types token"),
        ({"internal_only": False}, "turns internal_only off"),
        (
            {"token_endpoint_auth_method": "client_secret_basic"},
            "weakens token_endpoint_auth_method from private_key_jwt to client_secret_basic",
        ),
        ({"application_type": "native"}, "changes application_type from web to native"),
    ],
)
def test_widening_is_reported(current, changes, problem):
    assert current.narrowing_problems(dataclasses.replace(current, **changes)) == [problem]


def test_switching_between_key_based_methods_is_not_widening(current):
    assert current.narrowing_problems(dataclasses.replace(current, token_endpoint_auth_method="tls_client_auth")) == []


def test_new_ttl_without_old_one_is_judged_against_the_granted_lifetime(current):
    old = dataclasses.replace(current, requested_ttl=None)
    new = dataclasses.replace(current, requested_ttl=1800)
    assert old.narrowing_problems(new, current_ttl_seconds=3600) == []
    assert old.narrowing_problems(new, current_ttl_seconds=900) == ["lengthens requested_ttl from 900s to 1800s"]
    assert old.narrowing_problems(new) == ["sets requested_ttl 1800s where the current lifetime is unknown"]


def test_every_widening_is_listed(current):
    wider = dataclasses.replace(current, scope=("z",), internal_only=False, requested_ttl=9999)
    assert current.narrowing_problems(wider) == [
        "adds scopes z",
        "lengthens requested_ttl from 7200s to 9999s",
        "turns internal_only off",
    ]


# --- properties ---------------------------------------------------------------------------------------

# A small alphabet of characters that matter to URIs, scopes and control checks; it also spares Hypothesis
# building its Unicode tables, which is slow on a fresh checkout.
text = st.text(alphabet='aZ09:/._-#* "\\\x00\néh', max_size=20) | st.sampled_from(
    ["https://a.example/cb", "http://127.0.0.1/cb", "private_key_jwt", "none", "native", "code", "authorization_code"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "redirect_uris",
    "grant_types",
    "response_types",
    "token_endpoint_auth_method",
    "jwks",
    "jwks_uri",
    "scope",
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "contacts",
    "software_id",
    "software_version",
    "purpose",
    "requested_ttl",
    "audiences",
    "internal_only",
    "application_type",
]


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8))
def test_property_any_json_gives_metadata_or_metadata_error(data):
    """Arbitrary JSON never crashes the validator: it returns metadata or a MetadataError with reasons."""
    try:
        meta = validate_client_metadata(data, allow_shared_secret=False)
    except MetadataError as error:
        assert error.error in ("invalid_client_metadata", "invalid_redirect_uri")
        assert error.reasons
        assert all(isinstance(r, str) and r for r in error.reasons)
    else:
        json.dumps(meta.to_response_dict())
        assert meta.narrowing_problems(meta) == []


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True),
    st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True),
)
def test_property_fewer_scopes_is_narrowing(old, new):
    base = ClientMetadata(purpose="abc")
    before = dataclasses.replace(base, scope=tuple(old))
    after = dataclasses.replace(base, scope=tuple(new))
    assert (before.narrowing_problems(after) == []) == set(new).issubset(old)
