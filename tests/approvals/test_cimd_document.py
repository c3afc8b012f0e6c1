"""approvals.cimd.document: the client_id URL rules and the document rules, shared with the RFC 7591 validator."""

from __future__ import annotations

import pytest

from approvals.cimd.document import DOCUMENT_PURPOSE, client_id_url_problems, validate_cimd_document
from approvals.metadata import MetadataError, validate_client_metadata

URL = "https://app.example.com/oauth/client.json"
EC_JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "kid": "k1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    ]
}


def doc(**changes) -> dict:
    document = {
        "client_id": URL,
        "client_name": "Ticket Agent",
        "redirect_uris": ["https://app.example.com/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def problems_of(document, url: str = URL) -> MetadataError:
    with pytest.raises(MetadataError) as info:
        validate_cimd_document(url, document)
    return info.value


def test_a_public_web_client_document_is_valid():
    review = validate_cimd_document(URL, doc())
    assert review.client_id == URL and review.host == "app.example.com"
    meta = review.metadata
    assert meta.token_endpoint_auth_method == "none" and meta.application_type == "web"
    assert meta.redirect_uris == ("https://app.example.com/callback",)
    assert meta.purpose == DOCUMENT_PURPOSE
    assert [(r.host, r.same_host, r.loopback) for r in review.redirects] == [("app.example.com", True, False)]
    assert not review.loopback_only and review.warnings == ()


def test_the_submitters_purpose_replaces_the_placeholder():
    review = validate_cimd_document(URL, doc(), purpose="Triage support tickets")
    assert review.metadata.purpose == "Triage support tickets"


def test_private_key_jwt_with_an_inline_key_set_is_valid_and_is_the_default_with_keys():
    review = validate_cimd_document(URL, doc(token_endpoint_auth_method=None, jwks=EC_JWKS))
    assert review.metadata.token_endpoint_auth_method == "private_key_jwt"
    assert review.metadata.jwks == EC_JWKS


def test_the_auth_method_defaults_to_none_without_keys():
    assert validate_cimd_document(URL, doc(token_endpoint_auth_method=None)).metadata.token_endpoint_auth_method == (
        "none"
    )


def test_loopback_only_redirects_are_flagged_and_make_the_client_native():
    review = validate_cimd_document(URL, doc(redirect_uris=["http://127.0.0.1:33418/callback", "http://[::1]/cb"]))
    assert review.metadata.application_type == "native"
    assert review.loopback_only
    assert any("loopback host" in w and "§6.5" in w for w in review.warnings)


def test_redirect_hosts_are_shown_with_whether_they_match_the_client_id_host():
    review = validate_cimd_document(
        URL, doc(redirect_uris=["https://app.example.com/cb", "https://login.other.example/cb", "http://localhost/cb"])
    )
    assert review.redirect_hosts == ("app.example.com", "login.other.example", "localhost")
    assert review.foreign_redirect_hosts == ("login.other.example",)
    assert not review.loopback_only
    assert any("login.other.example differ from the client_id host app.example.com" in w for w in review.warnings)


def test_governance_fields_in_a_document_are_ignored_and_listed():
    review = validate_cimd_document(URL, doc(purpose="I say so", requested_ttl=999999, internal_only=True))
    assert review.metadata.purpose == DOCUMENT_PURPOSE
    assert review.metadata.requested_ttl is None and review.metadata.internal_only is False
    assert review.ignored_fields == ("purpose", "requested_ttl", "internal_only")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"client_id": None}, "client_id is missing"),
        ({"client_id": URL + "?v=2"}, "is not the URL the document was fetched from"),
        ({"client_id": 42}, "'int' is not the URL"),
        ({"client_name": None}, "client_name is required"),
        ({"redirect_uris": None}, "redirect_uris is required"),
        ({"redirect_uris": []}, "redirect_uris is required"),
        ({"client_secret": "s3cret"}, "client_secret must not appear"),
        ({"client_secret_expires_at": 0}, "client_secret_expires_at must not appear"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "cannot use a shared secret"),
        ({"token_endpoint_auth_method": "tls_client_auth"}, "must be none (a public client with PKCE) or private_key"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "requires jwks or jwks_uri"),
        ({"jwks": EC_JWKS}, '"none" takes no jwks'),
        (
            {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
            "jwks",
        ),
        ({"redirect_uris": ["https://app.example.com/*"]}, "wildcard"),
        ({"redirect_uris": ["http://app.example.com/cb"]}, "uses http"),
        ({"grant_types": ["implicit"], "response_types": ["token"]}, "implicit grant is not allowed"),
        ({"grant_types": ["client_credentials"]}, "client_credentials grant requires client authentication"),
    ],
)
def test_invalid_documents_are_refused_with_every_reason(changes, fragment):
    error = problems_of(doc(**changes))
    assert any(fragment in reason for reason in error.reasons), error.reasons


def test_every_problem_is_reported_at_once():
    error = problems_of({"client_id": "https://elsewhere.example/c.json", "client_secret": "x", "redirect_uris": ["x"]})
    assert error.error == "invalid_client_metadata"
    text = error.description
    for fragment in ("is not the URL", "client_secret must not appear", "client_name is required", "redirect URI"):
        assert fragment in text, text


def test_only_redirect_problems_give_invalid_redirect_uri():
    assert problems_of(doc(redirect_uris=["https://app.example.com/#x"])).error == "invalid_redirect_uri"


def test_a_document_that_is_not_an_object_is_refused():
    assert problems_of([URL]).reasons == ["the client metadata document must be a JSON object"]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://app.example.com/c.json", "https"),
        ("https://app.example.com", "path"),
        ("https://app.example.com/", "path"),
        ("https://app.example.com/a/../c.json", ".."),
        ("https://app.example.com/c.json#f", "fragment"),
        ("https://u:p@app.example.com/c.json", "password"),
        ("https://app.example.com:99999/c.json", "not a valid URL"),
        ("https://app.example.com/c json", "spaces"),
        (None, "non-empty"),
    ],
)
def test_client_id_url_rules(url, fragment):
    problems = client_id_url_problems(url)
    assert problems and any(fragment in p for p in problems), problems


def test_a_url_with_a_port_and_a_query_is_a_valid_client_id():
    assert client_id_url_problems("https://app.example.com:8443/oauth/client.json?v=1") == []


def test_the_rfc7591_path_still_refuses_none_for_web_clients():
    """The CIMD allowance for public web clients is opt-in: the agent API keeps its rule."""
    body = {"purpose": "testing", "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "none"}
    with pytest.raises(MetadataError) as info:
        validate_client_metadata(body, allow_shared_secret=False)
    assert any('"none" is only for native' in r for r in info.value.reasons)
    assert validate_client_metadata(body, allow_shared_secret=False, public_web_clients=True).application_type == "web"
