"""approvals.cimd.fetch against a real local HTTPS host (test CA): a valid document is fetched, hashed, validated
and cached within bounds; every hostile document is refused with its reason, never cached as valid, and
remembered briefly as a refusal; one fetch is in flight per URL."""

# ruff: noqa: F811 - the fixtures imported from tests.https_host are test parameters here

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace

import pytest
from django.core.cache import cache

from approvals.cimd import fetch as cimd_fetch
from approvals.cimd.fetch import CimdRefused, cache_seconds, get_document, key_set
from tests.https_host import https_host, loopback_fetches  # noqa: F401

PATH = "/oauth/client.json"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def document_for(url: str, **changes) -> dict:
    document = {
        "client_id": url,
        "client_name": "Ticket Agent",
        "redirect_uris": ["https://app.example.test/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def serve_document(https_host, path: str = PATH, *, host: str = "app.example.test", headers=None, **changes) -> str:
    url = https_host.url(path, host=host)
    https_host.serve(path, document_for(url, **changes), headers=headers)
    return url


def refused(url: str, code: str, fragment: str = "", **kwargs) -> CimdRefused:
    with pytest.raises(CimdRefused) as info:
        get_document(url, **kwargs)
    assert info.value.code == code, info.value.reason
    assert fragment in info.value.reason, info.value.reason
    # Nothing valid is cached for a refused URL.
    assert cache.get(cimd_fetch._key("doc", url)) is None
    return info.value


# --- the happy path and the cache ------------------------------------------------------------------


def test_a_valid_document_is_fetched_hashed_validated_and_cached(loopback_fetches, https_host):
    url = serve_document(https_host, headers={"Cache-Control": "public, max-age=3600"})
    first = get_document(url)
    body = json.dumps(document_for(url)).encode()
    assert first.body == body
    assert first.sha256 == hashlib.sha256(body).hexdigest()
    assert first.document["client_id"] == url
    assert first.review.client_id == url and first.review.host == "app.example.test"
    assert first.max_age == 3600 and first.expires_at - first.fetched_at == 3600
    assert first.address == "127.0.0.1" and not first.from_cache

    second = get_document(url)
    assert second.from_cache and second.sha256 == first.sha256
    assert https_host.hits(PATH) == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("max-age=600", 600),
        ("max-age=10", 300),  # below the floor: 5 minutes
        ("max-age=99999999", 3 * 86400),  # above the ceiling: 3 days
        ("no-store", 300),
        ("no-cache, max-age=3600", 300),
        ("", 300),
        ("max-age=banana", 300),
    ],
)
def test_cache_control_is_honoured_within_the_bounds(header, seconds):
    assert cache_seconds(header) == seconds


def test_the_bounds_are_settings(settings):
    settings.REGISTRAR_CIMD_CACHE_MIN_SECONDS = 60
    settings.REGISTRAR_CIMD_CACHE_MAX_SECONDS = 120
    assert cache_seconds("max-age=30") == 60
    assert cache_seconds("max-age=90") == 90
    assert cache_seconds("max-age=86400") == 120


def test_an_expired_entry_is_fetched_again(loopback_fetches, https_host):
    url = serve_document(https_host)
    first = get_document(url)
    cache.set(cimd_fetch._key("doc", url), replace(first, expires_at=first.fetched_at - 1))
    again = get_document(url)
    assert not again.from_cache
    assert https_host.hits(PATH) == 2


def test_refresh_skips_the_cache(loopback_fetches, https_host):
    url = serve_document(https_host)
    get_document(url)
    https_host.serve(PATH, document_for(url, client_name="Ticket Agent 2"))
    assert get_document(url).document["client_name"] == "Ticket Agent"
    assert get_document(url, refresh=True).document["client_name"] == "Ticket Agent 2"
    assert https_host.hits(PATH) == 2


def test_purpose_rechecks_with_the_submitters_purpose(loopback_fetches, https_host):
    url = serve_document(https_host)
    assert get_document(url, purpose="Triage support tickets").review.metadata.purpose == "Triage support tickets"
    with pytest.raises(CimdRefused) as info:
        get_document(url, purpose="x")
    assert info.value.code == "invalid" and "purpose must be 3 to 500" in info.value.reason


# --- refusals are remembered briefly, and never as valid ---------------------------------------------


def test_a_refusal_is_negatively_cached_then_refetched_on_refresh(loopback_fetches, https_host):
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, {"error": "nope"}, status=503)
    first = refused(url, "status", "503")
    assert not first.cached
    again = refused(url, "status", "503")
    assert again.cached
    assert https_host.hits(PATH) == 1

    https_host.serve(PATH, document_for(url))
    assert get_document(url, refresh=True).document["client_id"] == url
    assert https_host.hits(PATH) == 2
    assert get_document(url).from_cache  # the refusal is gone; the valid copy is served


def test_the_negative_cache_can_be_turned_off(loopback_fetches, https_host, settings):
    settings.REGISTRAR_CIMD_NEGATIVE_CACHE_SECONDS = 0
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, b"{", status=200)
    refused(url, "json")
    refused(url, "json")
    assert https_host.hits(PATH) == 2


def test_a_document_that_turns_invalid_is_not_served_from_the_old_valid_copy(loopback_fetches, https_host):
    url = serve_document(https_host)
    get_document(url)
    https_host.serve(PATH, document_for(url, client_id="https://evil.example.test/client.json"))
    refused(url, "invalid", "is not the URL the document was fetched from", refresh=True)
    again = refused(url, "invalid")
    assert again.cached


# --- one fetch in flight per URL ---------------------------------------------------------------------


def test_concurrent_callers_share_one_fetch(loopback_fetches, https_host):
    url = https_host.url(PATH, host="app.example.test")
    body = json.dumps(document_for(url)).encode()
    https_host.serve(PATH, body, drip=0.001)  # a few hundred ms: the callers overlap
    results, errors = [], []

    def call():
        try:
            results.append(get_document(url))
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert https_host.hits(PATH) == 1
    assert len(results) == 5 and {r.sha256 for r in results} == {hashlib.sha256(body).hexdigest()}
    assert sum(not r.from_cache for r in results) == 1


def test_a_caller_waits_for_another_process_fetch_and_uses_its_result(loopback_fetches, https_host, monkeypatch):
    """Another process holds the cross-process lock; this one waits, then takes that fetch's result."""
    url = serve_document(https_host)
    fetched_elsewhere = cimd_fetch._fetch(url, 5.0)  # as the other process would have stored it
    assert https_host.hits(PATH) == 1
    cache.delete(cimd_fetch._key("doc", url))
    cache.set(cimd_fetch._key("lock", url), "1", timeout=10)
    monkeypatch.setattr(cimd_fetch, "_POLL_SECONDS", 0.01)

    def finish_elsewhere():
        cache.set(cimd_fetch._key("doc", url), fetched_elsewhere, timeout=300)
        cache.delete(cimd_fetch._key("lock", url))

    timer = threading.Timer(0.2, finish_elsewhere)
    timer.start()
    try:
        result = get_document(url)
    finally:
        timer.join()
    assert result.sha256 == fetched_elsewhere.sha256 and result.from_cache
    assert https_host.hits(PATH) == 1


# --- hostile documents, each refused with its reason -----------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_refused(loopback_fetches, https_host, status):
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, b"", status=status, headers={"Location": "https://elsewhere.example.test/c.json"})
    refused(url, "redirect", f"answered {status}")
    assert https_host.hits("/c.json") == 0


@pytest.mark.parametrize("status", [201, 204, 404, 500])
def test_anything_but_200_is_refused(loopback_fetches, https_host, status):
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, document_for(url), status=status)
    refused(url, "status", f"answered {status}")


def test_a_body_over_5_kb_is_refused(loopback_fetches, https_host):
    url = serve_document(https_host, x_padding="a" * 5200)  # unknown members are ignored, but count
    refused(url, "too_large", "at most 5120")


def test_a_body_over_the_cap_without_a_length_is_cut_off(loopback_fetches, https_host):
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, b" " * 6000 + b"{}", headers={"Content-Length": None})
    refused(url, "too_large", "larger than 5120")


def test_the_size_cap_is_a_setting(loopback_fetches, https_host, settings):
    settings.REGISTRAR_CIMD_MAX_BYTES = 8192
    url = serve_document(https_host, x_padding="a" * 5200)
    assert len(get_document(url).document["x_padding"]) == 5200


def test_a_slow_body_is_cut_off_at_the_deadline(loopback_fetches, https_host, settings):
    settings.REGISTRAR_CIMD_TIMEOUT_SECONDS = 0.5
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, json.dumps(document_for(url)), drip=0.05)  # ~10 s for the whole body
    refused(url, "timeout", "within 0.5 s")


def test_a_wrong_client_id_is_refused(loopback_fetches, https_host):
    url = serve_document(https_host, client_id="https://app.example.test/oauth/other.json")
    error = refused(url, "invalid", "is not the URL the document was fetched from")
    assert error.reasons[0].startswith("client_id 'https://app.example.test/oauth/other.json'")


def test_a_client_id_differing_only_in_case_or_a_trailing_slash_is_refused(loopback_fetches, https_host):
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, document_for(url.replace("app.example.test", "APP.example.test")))
    refused(url, "invalid", "is not the URL")
    https_host.serve(PATH, document_for(url + "/"))
    refused(url, "invalid", "is not the URL", refresh=True)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"client_id": ', "not valid JSON"),
        (b"[" * 3000 + b"]" * 3000, "not valid JSON"),
        (b'{"client_id": "x", "client_name": "\\ud800"}', "unpaired surrogate"),
        (b'{"client_id": NaN}', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
    ids=["truncated", "huge-nesting", "unpaired-surrogate", "nan", "not-utf8"],
)
def test_json_that_is_not_i_json_is_refused(loopback_fetches, https_host, settings, body, fragment):
    settings.REGISTRAR_CIMD_MAX_BYTES = 8192
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, body)
    refused(url, "json", fragment)


def test_a_json_value_that_is_not_an_object_is_refused(loopback_fetches, https_host):
    url = https_host.url(PATH, host="app.example.test")
    https_host.serve(PATH, [url])
    refused(url, "invalid", "must be a JSON object")


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private address"),
        ("192.168.0.10", "private address"),
        ("fd00::1", "unique-local"),
    ],
)
def test_a_host_resolving_to_a_special_use_address_is_refused(loopback_fetches, https_host, address, fragment):
    loopback_fetches.names["evil.example.test"] = [address]
    url = https_host.url(PATH, host="evil.example.test")
    refused(url, "address", fragment)
    assert https_host.hits(PATH) == 0


def test_a_host_resolving_to_loopback_is_refused_outside_tests(loopback_fetches, https_host, settings):
    settings.REGISTRAR_FETCH_ALLOW_LOOPBACK = False
    url = serve_document(https_host)
    refused(url, "address", "resolves to 127.0.0.1, which is a loopback address")
    assert https_host.hits(PATH) == 0


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://app.example.test/oauth/client.json", "must use https"),
        ("https://app.example.test", "must have a path"),
        ("https://app.example.test/", "must have a path"),
        ("https://app.example.test/a/../client.json", '".." path segments'),
        ("https://app.example.test/./client.json", '".." path segments'),
        ("https://app.example.test/client.json#frag", "fragment"),
        ("https://user:pw@app.example.test/client.json", "user name or password"),
        ("ftp://app.example.test/client.json", "must use https"),
        ("https:///client.json", "no host"),
        ("", "non-empty"),
    ],
)
def test_urls_that_cannot_be_a_client_id_are_refused_before_any_fetch(loopback_fetches, https_host, url, fragment):
    refused(url, "url", fragment)
    assert sum(https_host.hits(p) for p in ("/oauth/client.json", "/client.json", "/")) == 0


# --- keys ---------------------------------------------------------------------------------------------

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


def test_a_public_client_has_no_keys(loopback_fetches, https_host):
    assert key_set(get_document(serve_document(https_host))) is None


def test_inline_keys_are_the_key_set(loopback_fetches, https_host):
    url = serve_document(https_host, token_endpoint_auth_method="private_key_jwt", jwks=EC_JWKS)
    assert key_set(get_document(url)) == EC_JWKS


def test_keys_behind_jwks_uri_are_fetched_and_vetted(loopback_fetches, https_host):
    jwks_uri = https_host.serve("/jwks.json", EC_JWKS).replace("localhost", "app.example.test")
    url = serve_document(https_host, token_endpoint_auth_method="private_key_jwt", jwks_uri=jwks_uri)
    assert key_set(get_document(url)) == EC_JWKS
    assert https_host.hits("/jwks.json") == 1


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ({"body": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "jwks_uri document.keys[0]"),
        ({"status": 302, "headers": {"Location": "https://169.254.169.254/"}}, "redirect"),
        ({"body": b'{"keys": ['}, "not valid JSON"),
    ],
)
def test_bad_keys_behind_jwks_uri_are_refused(loopback_fetches, https_host, answer, fragment):
    jwks_uri = https_host.serve("/jwks.json", **answer).replace("localhost", "app.example.test")
    url = serve_document(https_host, token_endpoint_auth_method="private_key_jwt", jwks_uri=jwks_uri)
    with pytest.raises(CimdRefused) as info:
        key_set(get_document(url))
    assert info.value.code == "keys" and fragment in info.value.reason, info.value.reason
