"""inventory.keys: the one key-set validator, and every path that gives a client keys agreeing with it."""

from __future__ import annotations

import json
import warnings

import pytest
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from approvals.metadata import MetadataError, validate_client_metadata
from inventory.keys import KeySetError, jwks_problems, jwks_thumbprints, validate_public_jwks
from inventory.lifecycle import LifecycleError, client_rotate_key
from inventory.models import Client, OutboxEntry
from portal.models import AuditEvent
from tests.factories import ClientFactory


def _weak_rsa() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns about generating a 1024-bit key
        return RSAKey.generate_key(1024).as_dict(private=False)


def _ec(kid: str | None = None) -> dict:
    key = ECKey.generate_key("P-256").as_dict(private=False)
    return key | {"kid": kid} if kid else key


# Key sets every path must refuse, and the reason each gives.
BAD_KEY_SETS = {
    "1024-bit RSA with a repeated kid": (
        lambda: {"keys": [_weak_rsa() | {"kid": "k1"}, _ec("k1")]},
        "jwks.keys[0] is a 1024-bit RSA key; at least 2048 bits are required",
    ),
    "repeated kid": (lambda: {"keys": [_ec("k1"), _ec("k1")]}, "jwks.keys[1] repeats kid 'k1'"),
    "private EC key": (
        lambda: {"keys": [ECKey.generate_key("P-256").as_dict(private=True)]},
        "jwks.keys[0] contains private key material (d); register only the public key",
    ),
    "symmetric key": (
        lambda: {"keys": [OctKey.generate_key(256).as_dict()]},
        "jwks.keys[0] is a symmetric (oct) key; register only public asymmetric keys (RSA, EC, OKP)",
    ),
    "no keys": (lambda: {"keys": []}, "jwks.keys must contain at least one key"),
    "too many keys": (lambda: {"keys": [_ec() for _ in range(21)]}, "jwks.keys has 21 keys; at most 20 are allowed"),
    "point off the curve": (
        lambda: {"keys": [(lambda k: k | {"y": k["x"]})(_ec())]},
        "jwks.keys[0] is not a valid public JWK",
    ),
}


@pytest.mark.parametrize("case", list(BAD_KEY_SETS))
def test_the_validator_refuses_with_the_reason(case):
    make, reason = BAD_KEY_SETS[case]
    problems = jwks_problems(make())
    assert problems and problems[0].startswith(reason)
    with pytest.raises(KeySetError) as info:
        validate_public_jwks(make())
    assert info.value.problems == problems or info.value.problems[0].startswith(reason)


@pytest.mark.parametrize("case", list(BAD_KEY_SETS))
def test_registration_refuses_what_the_validator_refuses(case):
    make, reason = BAD_KEY_SETS[case]
    with pytest.raises(MetadataError) as info:
        validate_client_metadata({"purpose": "Summarise tickets", "jwks": make()}, allow_shared_secret=False)
    assert info.value.reasons[0].startswith(reason)


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_KEY_SETS))
def test_owner_rotation_refuses_what_registration_refuses(owner, case):
    make, reason = BAD_KEY_SETS[case]
    old = {"keys": [_ec("current")]}
    client = ClientFactory(owner=owner, jwks=old)
    with pytest.raises(LifecycleError) as info:
        client_rotate_key(client=client, user=owner, jwks=make(), reason="rotation")
    assert str(info.value).startswith(reason)
    assert Client.objects.get(pk=client.pk).jwks == old
    assert not AuditEvent.objects.exists() and not OutboxEntry.objects.exists()


@pytest.mark.django_db
def test_owner_rotation_refuses_a_1024_bit_rsa_key_with_duplicate_kids(owner):
    """Regression: owner rotation had its own, laxer copy of the key checks and accepted this key set."""
    weak = {"keys": [_weak_rsa() | {"kid": "dup"}, _ec("dup")]}
    client = ClientFactory(owner=owner, jwks={"keys": [_ec("current")]})
    with pytest.raises(LifecycleError) as info:
        client_rotate_key(client=client, user=owner, jwks=json.dumps(weak))
    assert "jwks.keys[0] is a 1024-bit RSA key; at least 2048 bits are required" in str(info.value)
    assert "jwks.keys[1] repeats kid 'dup'" in str(info.value)
    assert Client.objects.get(pk=client.pk).jwks["keys"][0]["kid"] == "current"


@pytest.mark.parametrize(
    "make",
    [
        lambda: RSAKey.generate_key(2048).as_dict(private=False),
        lambda: ECKey.generate_key("P-384").as_dict(private=False),
        lambda: OKPKey.generate_key("Ed25519").as_dict(private=False),
    ],
)
def test_public_keys_pass_and_are_copied(make):
    jwks = {"keys": [make()]}
    checked = validate_public_jwks(json.dumps(jwks))
    assert checked == jwks
    checked["keys"].clear()
    assert validate_public_jwks(jwks) == jwks


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "jwks is not valid JSON"),
        ('{"keys": [{"n": NaN}]}', "jwks is not valid JSON: NaN is not a JSON number"),
        ("[]", 'jwks must be a JSON object with a "keys" list'),
        (" " * 70_000, "jwks is larger than 65536 bytes"),
    ],
)
def test_key_set_text_must_be_i_json(raw, reason):
    with pytest.raises(KeySetError) as info:
        validate_public_jwks(raw)
    assert str(info.value).startswith(reason)


def test_thumbprints_are_rfc7638():
    keys = [ECKey.generate_key("P-256"), RSAKey.generate_key(2048), OKPKey.generate_key("Ed25519")]
    jwks = {"keys": [key.as_dict(private=False) | {"kid": "ignored", "use": "sig"} for key in keys]}
    assert jwks_thumbprints(jwks) == [key.thumbprint() for key in keys]
    assert jwks_thumbprints(None) == [] and jwks_thumbprints({"keys": [{"kty": "?"}, "x"]}) == ["(unreadable)"] * 2
