"""Client keys: the one validator for public JSON Web Key Sets, and fetching a key set from a ``jwks_uri``.

Every path that gives a client keys goes through here, so the same key set is accepted or refused the same
way everywhere: RFC 7591 registration and RFC 7592 update (``approvals.metadata`` / ``approvals.oauth2``),
an owner's key rotation (``inventory.lifecycle.client_rotate_key``), and the keys behind a ``jwks_uri``
(``jwks_fetch``, through ``portal.safefetch``).

Rules for a key set (``jwks_problems`` lists every violation; ``validate_public_jwks`` raises them):

- a JSON object with a ``"keys"`` list of 1 to ``MAX_JWKS_KEYS`` keys;
- each key a JSON object that joserfc imports as a public asymmetric key (RSA, EC, OKP): no private
  members (``PRIVATE_JWK_MEMBERS``), no symmetric ``oct`` key, a point on its curve;
- RSA moduli of at least ``MIN_RSA_BITS`` bits;
- no ``kid`` used twice (a verifier picking a key by ``kid`` must find one key).

Pure apart from ``jwks_fetch``: no model, no database. ``approvals`` imports this module, never the reverse.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from portal import jsonbody
from portal.censor import JWK_PRIVATE_MEMBER_ORDER
from portal.logs import log_event

logger = logging.getLogger(__name__)

# Client authentication methods (RFC 7591 §2 token_endpoint_auth_method), by what the client proves:
# possession of a key; a key the client registers (a JWKS or jwks_uri: tls_client_auth proves a certificate a
# CA issued instead); a secret it shares with the IdP. "none" (a public client) is neither.
KEY_BASED_METHODS = frozenset({"private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"})
JWKS_METHODS = frozenset({"private_key_jwt", "self_signed_tls_client_auth"})
SHARED_SECRET_METHODS = frozenset({"client_secret_basic", "client_secret_post", "client_secret_jwt"})
# JWK members that only a private or symmetric key carries: the kernel's list (the censor hides them), in the
# order messages name them.
PRIVATE_JWK_MEMBERS = JWK_PRIVATE_MEMBER_ORDER
MIN_RSA_BITS = 2048
MAX_JWKS_KEYS = 20
# A key set of MAX_JWKS_KEYS RSA-4096 keys with certificates fits comfortably; anything bigger is not a JWKS.
MAX_JWKS_BYTES = 64 * 1024


class KeySetError(ValueError):
    """A key set was refused. ``problems`` lists every reason, each naming the key it is about."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _rsa_bits(key: Mapping[str, Any]) -> int | None:
    """The modulus size of an RSA JWK, or None if it is not one or ``n`` is unreadable (import reports that)."""
    n = key.get("n")
    if key.get("kty") != "RSA" or not isinstance(n, str):
        return None
    try:
        return int.from_bytes(base64.b64decode(n + "=" * (-len(n) % 4), altchars=b"-_", validate=True)).bit_length()
    except (ValueError, binascii.Error):
        return None


def _key_problems(where: str, key: Any, seen_kids: set[str]) -> list[str]:
    if not isinstance(key, Mapping):
        return [f"{where} must be a JSON object"]
    problems = [_key_problem(where, key)]
    kid = key.get("kid")
    if isinstance(kid, str):
        if kid in seen_kids:
            problems.append(f"{where} repeats kid {kid!r}")
        seen_kids.add(kid)
    return [p for p in problems if p]


def _key_problem(where: str, key: Mapping[str, Any]) -> str | None:
    """What is wrong with one key itself (the first thing found), or None."""
    private = [m for m in PRIVATE_JWK_MEMBERS if m in key]
    if key.get("kty") == "oct" or "k" in private:
        return f"{where} is a symmetric (oct) key; register only public asymmetric keys (RSA, EC, OKP)"
    if private:
        return f"{where} contains private key material ({', '.join(private)}); register only the public key"
    bits = _rsa_bits(key)
    if bits is not None and bits < MIN_RSA_BITS:
        # Checked before importing: joserfc would log a SecurityWarning for every weak key it is sent.
        return f"{where} is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
    try:
        imported = JWKRegistry.import_key(dict(key))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        detail = str(exc) or type(exc).__name__
        return f"{where} is not a valid public JWK ({detail})"
    if imported.is_private:  # belt and braces: the member check above should make this unreachable
        return f"{where} is a private key; register only the public key"
    return None


def jwks_problems(value: Any, *, label: str = "jwks") -> list[str]:
    """Every reason ``value`` is not an acceptable public key set ([] if it is). ``label`` names it in messages."""
    keys = value.get("keys") if isinstance(value, Mapping) else None
    if not isinstance(keys, list):
        return [f'{label} must be a JSON object with a "keys" list']
    if not keys:
        return [f"{label}.keys must contain at least one key"]
    if len(keys) > MAX_JWKS_KEYS:
        return [f"{label}.keys has {len(keys)} keys; at most {MAX_JWKS_KEYS} are allowed"]
    seen_kids: set[str] = set()
    return [p for i, key in enumerate(keys) for p in _key_problems(f"{label}.keys[{i}]", key, seen_kids)]


def validate_public_jwks(value: Any, *, label: str = "jwks") -> dict[str, Any]:
    """A checked copy ``{"keys": [...]}`` of ``value`` (a parsed key set, or its JSON text); KeySetError if refused."""
    if isinstance(value, str | bytes):
        value = parse_jwks_json(value, label=label)
    problems = jwks_problems(value, label=label)
    if problems:
        raise KeySetError(problems)
    return {"keys": copy.deepcopy(value["keys"])}


def parse_jwks_json(raw: str | bytes, *, label: str = "jwks") -> Any:
    """Parse key-set JSON text as I-JSON (``portal.jsonbody``); KeySetError naming ``label`` if it is not JSON."""
    if len(raw) > MAX_JWKS_BYTES:
        raise KeySetError([f"{label} is larger than {MAX_JWKS_BYTES} bytes"])
    try:
        return jsonbody.loads(raw)
    except ValueError as exc:
        raise KeySetError([f"{label} is not valid JSON: {exc}"])


# RFC 7638 §3.2: the members a thumbprint hashes, per key type (RFC 8037 §2 for OKP).
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(key: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint (base64url) of a public JWK; "(unreadable)" for a key without its members."""
    members = _THUMBPRINT_MEMBERS.get(key.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(key.get(m), str) for m in members):
        return "(unreadable)"
    canonical = json.dumps({m: key[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def jwks_thumbprints(jwks: Mapping[str, Any] | None) -> list[str]:
    """The thumbprints of a key set's keys, in order (for audit events and the explain page)."""
    keys = (jwks or {}).get("keys") or ()
    return [jwk_thumbprint(key) if isinstance(key, Mapping) else "(unreadable)" for key in keys]


# --- keys behind a jwks_uri ------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedKeySet:
    """A key set fetched from ``uri`` and validated; ``address`` is the IP it was fetched from."""

    uri: str
    jwks: dict[str, Any]
    address: str

    @property
    def thumbprints(self) -> list[str]:
        return jwks_thumbprints(self.jwks)


def jwks_fetch(uri: str, *, label: str = "jwks_uri") -> FetchedKeySet:
    """Fetch the key set at ``uri`` through the safe fetcher and validate it like an inline ``jwks``.

    Raises KeySetError with the reason: the fetcher's refusal (not https, a redirect, not 200, too big, too
    slow, a special-use address, TLS failure), JSON that is not I-JSON, or the key-set rules above.
    """
    from portal import safefetch

    try:
        result = safefetch.fetch(uri, max_bytes=MAX_JWKS_BYTES, accept="application/jwk-set+json, application/json")
    except safefetch.FetchRefused as exc:
        log_event(logger, "jwks_uri_refused", code=exc.code, host=safefetch.host_of(uri))
        raise KeySetError([f"{label} could not be fetched: {exc.reason}"])
    document = parse_jwks_json(result.body, label=f"the document at {label}")
    problems = jwks_problems(document, label=f"{label} document")
    if problems:
        raise KeySetError(problems)
    return FetchedKeySet(uri=uri, jwks={"keys": copy.deepcopy(document["keys"])}, address=result.address)


__all__ = [
    "JWKS_METHODS",
    "KEY_BASED_METHODS",
    "MAX_JWKS_BYTES",
    "MAX_JWKS_KEYS",
    "MIN_RSA_BITS",
    "PRIVATE_JWK_MEMBERS",
    "SHARED_SECRET_METHODS",
    "FetchedKeySet",
    "KeySetError",
    "jwks_fetch",
    "jwks_problems",
    "jwk_thumbprint",
    "jwks_thumbprints",
    "parse_jwks_json",
    "validate_public_jwks",
]
