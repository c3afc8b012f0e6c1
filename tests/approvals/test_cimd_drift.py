"""approvals.cimd.drift: narrowing, neutral and widening changes of a pinned CIMD document."""

from __future__ import annotations

import hashlib
import json

import pytest
from joserfc.jwk import ECKey

from approvals.cimd.document import validate_cimd_document
from approvals.cimd.drift import NARROWING, NEUTRAL, SAME, WIDENING, classify

URL = "https://app.example.com/oauth/client.json"
KEY_A = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "a",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
KEY_B = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "b",
    "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
    "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
}
KEY_C = ECKey.generate_key("P-256", parameters={"kid": "c"}).as_dict(private=False)
BASE = {
    "client_id": URL,
    "client_name": "Desk Agent",
    "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb2"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "scope": "tickets:read docs:read",
    "token_endpoint_auth_method": "private_key_jwt",
    "jwks": {"keys": [KEY_A, KEY_B]},
}


def judge(new: dict, old: dict = BASE):
    def sha(d):
        return hashlib.sha256(json.dumps(d).encode()).hexdigest()

    return classify(
        pinned_sha256=sha(old),
        pinned=validate_cimd_document(URL, old),
        pinned_document=old,
        pinned_keys=old.get("jwks"),
        fetched_sha256=sha(new),
        fetched=validate_cimd_document(URL, new),
        fetched_document=new,
        fetched_keys=new.get("jwks"),
    )


def test_the_same_document_is_same():
    assert judge(dict(BASE)).kind == SAME
    reordered = dict(reversed(list(BASE.items())))
    assert judge(reordered).kind == SAME


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"redirect_uris": ["https://app.example.com/cb"]}, "removes redirect URIs https://app.example.com/cb2"),
        ({"scope": "tickets:read"}, "removes scopes docs:read"),
        ({"grant_types": ["authorization_code"]}, "removes grant types refresh_token"),
        ({"jwks": {"keys": [KEY_A]}}, "removes keys"),
    ],
)
def test_narrowing_changes_are_applied(changes, fragment):
    drift = judge(BASE | changes)
    assert drift.kind == NARROWING and not drift.needs_review
    assert any(fragment in n for n in drift.narrowing), drift.narrowing
    assert drift.diff.startswith("--- pinned\n+++ fetched")


def test_a_change_that_grants_nothing_is_neutral():
    drift = judge(BASE | {"software_version": "2.0"})
    assert drift.kind == NEUTRAL and '+  "software_version": "2.0"' in drift.diff


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"redirect_uris": [*BASE["redirect_uris"], "https://evil.example.net/cb"]},
            "adds redirect hosts evil.example.net",
        ),
        ({"redirect_uris": [*BASE["redirect_uris"], "https://app.example.com/cb3"]}, "adds redirect URIs"),
        ({"scope": "tickets:read docs:read tickets:write"}, "adds scopes tickets:write"),
        ({"grant_types": ["authorization_code", "refresh_token", "client_credentials"]}, "adds grant types"),
        ({"jwks": {"keys": [KEY_A, KEY_B, KEY_C]}}, "adds or changes keys"),
        ({"jwks": {"keys": [KEY_A, KEY_C | {"kid": "b"}]}}, "adds or changes keys"),  # same kid, another key
        (
            {"token_endpoint_auth_method": "none", "jwks": None},
            "weakens token_endpoint_auth_method from private_key_jwt to none",
        ),
        ({"client_name": "Desk Agent (official)"}, "changes client_name"),
        ({"logo_uri": "https://cdn.example.net/logo.png"}, "changes logo_uri"),
    ],
)
def test_widening_changes_go_to_review(changes, fragment):
    new = {k: v for k, v in (BASE | changes).items() if v is not None}
    drift = judge(new)
    assert drift.kind == WIDENING and drift.needs_review
    assert any(fragment in w for w in drift.widening), drift.widening


def test_a_widening_and_narrowing_change_is_widening_and_lists_both():
    drift = judge(BASE | {"redirect_uris": ["https://new.example.org/cb"]})
    assert drift.kind == WIDENING
    assert any("new.example.org" in w for w in drift.widening)
    assert any("removes redirect URIs" in n for n in drift.narrowing)
