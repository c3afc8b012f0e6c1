"""RFC 7591 client metadata validation, pure: a request body in, a ``ClientMetadata`` or a ``MetadataError`` out.

Every problem is reported at once (an agent fixing its request one error per round trip is slow and noisy).
The error code is ``invalid_redirect_uri`` when only ``redirect_uris`` is wrong, else
``invalid_client_metadata`` (RFC 7591 §3.2.2). Unknown fields are ignored (RFC 7591 §2).

Choices beyond the RFC, made for agents and governance:

- ``grant_types`` defaults to ``["authorization_code"]`` when redirect URIs are given, else
  ``["client_credentials"]`` (most agents are confidential machine clients without a browser).
- ``implicit`` and ``password`` are refused (OAuth 2.0 Security BCP, RFC 9700 §2.1.2 and §2.4).
- ``token_endpoint_auth_method`` defaults to ``private_key_jwt``; shared secrets only where the policy
  allows them; ``none`` only for native public clients using the authorization code flow.
- ``jwks`` is checked by the one key-set validator every path uses (``inventory.keys``): public asymmetric
  keys only, RSA of at least 2048 bits, no repeated ``kid``. ``jwks_uri`` is only checked for form here (an
  absolute https URI); ``approvals.oauth2.client_keys`` fetches it and checks the keys behind it by the same rules.
- Registrar extensions: ``purpose`` (required), ``requested_ttl``, ``audiences``, ``internal_only``.

Why one module of ~450 lines: it is one validator, the ``ClientMetadata`` it fills and the field readers only it
uses; every field of the dataclass is set in ``validate_client_metadata`` and compared in
``narrowing_problems``, and a reader checks both against RFC 7591 §2 side by side. The field checks share
the collected-errors state (every problem is reported at once) and the normalised result.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from approvals.policy import redirect_uri_problems
from inventory.keys import JWKS_METHODS, KEY_BASED_METHODS, SHARED_SECRET_METHODS, jwks_problems

AUTH_METHODS = KEY_BASED_METHODS | SHARED_SECRET_METHODS | {"none"}
GRANT_TYPES = frozenset(
    {
        "authorization_code",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:device_code",
    }
)
REFUSED_GRANT_TYPES = {
    "implicit": "the implicit grant is not allowed (RFC 9700); use authorization_code with PKCE",
    "password": "the password grant is not allowed (RFC 9700); agents must not handle user passwords",
}
RESPONSE_TYPES = frozenset({"code", "token"})
# RFC 7591 §2.1: which response type each grant type goes with.
_GRANT_FOR_RESPONSE = {"code": "authorization_code", "token": "implicit"}
# Key strength of each auth method, for "is the new method weaker?" (narrowing_problems).
AUTH_STRENGTH = {
    **dict.fromkeys(KEY_BASED_METHODS, 3),
    "client_secret_jwt": 2,
    "client_secret_basic": 1,
    "client_secret_post": 1,
    "none": 0,
}

MAX_TTL_SECONDS = 365 * 86400
MAX_LIST_ITEMS = 50
MAX_URI_LENGTH = 2000
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class MetadataError(ValueError):
    """Client metadata was refused. ``error`` is the RFC 7591 code; ``reasons`` lists every problem."""

    def __init__(self, error: str, reasons: list[str]) -> None:
        self.error = error
        self.reasons = list(reasons)
        super().__init__(f"{error}: {self.description}")

    @property
    def description(self) -> str:
        """For the RFC 7591 ``error_description``."""
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """Validated client metadata. ``jwks`` holds public keys only; treat it as read-only."""

    purpose: str
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("client_credentials",)
    response_types: tuple[str, ...] = ()
    token_endpoint_auth_method: str = "private_key_jwt"
    application_type: str = "web"
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    scope: tuple[str, ...] = ()
    client_name: str | None = None
    client_uri: str | None = None
    logo_uri: str | None = None
    tos_uri: str | None = None
    policy_uri: str | None = None
    contacts: tuple[str, ...] = ()
    software_id: str | None = None
    software_version: str | None = None
    requested_ttl: int | None = None
    audiences: tuple[str, ...] = ()
    internal_only: bool = False

    def to_response_dict(self) -> dict[str, Any]:
        """The registered metadata for an RFC 7591 §3.2.1 response: fields without a value are left out.

        Defaults the server applied (grant types, auth method, application type) are included, as the RFC
        requires; ``response_types`` is always present because an empty list differs from the RFC default.
        """
        out: dict[str, Any] = {}
        if self.redirect_uris:
            out["redirect_uris"] = list(self.redirect_uris)
        out["token_endpoint_auth_method"] = self.token_endpoint_auth_method
        out["grant_types"] = list(self.grant_types)
        out["response_types"] = list(self.response_types)
        out["application_type"] = self.application_type
        for name in ("client_name", "client_uri", "logo_uri", "tos_uri", "policy_uri", "jwks_uri"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.scope:
            out["scope"] = " ".join(self.scope)
        if self.contacts:
            out["contacts"] = list(self.contacts)
        if self.jwks is not None:
            out["jwks"] = copy.deepcopy(self.jwks)
        for name in ("software_id", "software_version"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["purpose"] = self.purpose
        if self.requested_ttl is not None:
            out["requested_ttl"] = self.requested_ttl
        if self.audiences:
            out["audiences"] = list(self.audiences)
        out["internal_only"] = self.internal_only
        return out

    def policy_fields(self) -> dict[str, Any]:
        """The ``RegistrationContext`` fields that come from the metadata itself."""
        return {
            "requested_scopes": self.scope,
            "requested_ttl": self.requested_ttl,
            "redirect_uris": self.redirect_uris,
            "application_type": self.application_type,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "internal_only": self.internal_only,
        }

    def narrowing_problems(self, new: ClientMetadata, *, current_ttl_seconds: int | None = None) -> list[str]:
        """Why ``new`` would widen this client; empty means ``new`` only narrows (RFC 7592 PUT by the agent).

        Key rotation (different ``jwks``/``jwks_uri``) and cosmetic fields are allowed. When this client
        asked for no TTL, pass ``current_ttl_seconds`` (what policy granted) to judge a newly requested TTL.
        """
        problems: list[str] = []
        added = [s for s in new.scope if s not in self.scope]
        if added:
            problems.append(f"adds scopes {', '.join(added)}")
        old_ttl = self.requested_ttl if self.requested_ttl is not None else current_ttl_seconds
        if new.requested_ttl is None:
            if self.requested_ttl is not None:
                problems.append("drops requested_ttl, which would fall back to the policy default")
        elif old_ttl is None:
            problems.append(f"sets requested_ttl {new.requested_ttl}s where the current lifetime is unknown")
        elif new.requested_ttl > old_ttl:
            problems.append(f"lengthens requested_ttl from {old_ttl}s to {new.requested_ttl}s")
        added = [u for u in new.redirect_uris if u not in self.redirect_uris]
        if added:
            problems.append(f"adds redirect URIs {', '.join(added)}")
        added = [a for a in new.audiences if a not in self.audiences]
        if added:
            problems.append(f"adds audiences {', '.join(added)}")
        elif self.audiences and not new.audiences:
            problems.append("removes the audience restriction")
        added = [g for g in new.grant_types if g not in self.grant_types]
        if added:
            problems.append(f"adds grant types {', '.join(added)}")
        added = [r for r in new.response_types if r not in self.response_types]
        if added:
            problems.append(f"adds response types {', '.join(added)}")
        if self.internal_only and not new.internal_only:
            problems.append("turns internal_only off")
        old_method, new_method = self.token_endpoint_auth_method, new.token_endpoint_auth_method
        if AUTH_STRENGTH.get(new_method, -1) < AUTH_STRENGTH.get(old_method, -1):
            problems.append(f"weakens token_endpoint_auth_method from {old_method} to {new_method}")
        if new.application_type != self.application_type:
            # native loosens redirect and public-client rules; web changes who may hold the client.
            problems.append(f"changes application_type from {self.application_type} to {new.application_type}")
        return problems


class _Problems:
    """Collects problems in field order, remembering which concern redirect URIs."""

    def __init__(self) -> None:
        self.items: list[tuple[bool, str]] = []

    def add(self, message: str, *, redirect: bool = False) -> None:
        self.items.append((redirect, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        only_redirect = all(redirect for redirect, _ in self.items)
        raise MetadataError(
            "invalid_redirect_uri" if only_redirect else "invalid_client_metadata",
            [message for _, message in self.items],
        )


def _present(body: Mapping[str, Any], name: str) -> bool:
    # JSON null is treated as absent: many clients serialise unset optional fields that way.
    return body.get(name) is not None


def _string_list(
    body: Mapping[str, Any], name: str, problems: _Problems, *, redirect: bool = False, max_length: int = 500
) -> tuple[str, ...] | None:
    """A list of non-empty strings, deduplicated in order; None if absent or wrong."""
    if not _present(body, name):
        return None
    value = body[name]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        problems.add(f"{name} must be a list of strings", redirect=redirect)
        return None
    ok = True
    if len(value) > MAX_LIST_ITEMS:
        problems.add(f"{name} has {len(value)} entries; at most {MAX_LIST_ITEMS} are allowed", redirect=redirect)
        ok = False
    for i, item in enumerate(value):
        if not item.strip():
            problems.add(f"{name}[{i}] must not be empty", redirect=redirect)
            ok = False
        elif len(item) > max_length:
            problems.add(f"{name}[{i}] is longer than {max_length} characters", redirect=redirect)
            ok = False
    return tuple(dict.fromkeys(value)) if ok else None


def _string(
    body: Mapping[str, Any], name: str, problems: _Problems, *, max_length: int = 255, min_length: int = 1
) -> str | None:
    if not _present(body, name):
        return None
    value = body[name]
    if not isinstance(value, str):
        problems.add(f"{name} must be a string")
        return None
    if not value.strip():
        problems.add(f"{name} must not be empty")
        return None
    if not min_length <= len(value) <= max_length:
        problems.add(f"{name} must be {min_length} to {max_length} characters long, got {len(value)}")
        return None
    if not value.isprintable():
        problems.add(f"{name} must not contain control characters")
        return None
    return value


def _https_uri(body: Mapping[str, Any], name: str, problems: _Problems) -> str | None:
    value = _string(body, name, problems, max_length=MAX_URI_LENGTH)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme != "https" or not host or " " in value:
        problems.add(f"{name} must be an absolute https URI, got {value[:120]!r}")
        return None
    if "#" in value:
        problems.add(f"{name} must not contain a fragment")
        return None
    return value


def _jwks(body: Mapping[str, Any], problems: _Problems) -> dict[str, Any] | None:
    """The inline key set, checked by the one key-set validator (``inventory.keys``)."""
    if not _present(body, "jwks"):
        return None
    key_problems = jwks_problems(body["jwks"], label="jwks")
    for message in key_problems:
        problems.add(message)
    if key_problems:
        return None
    return {"keys": copy.deepcopy(body["jwks"]["keys"])}


def _scope(body: Mapping[str, Any], problems: _Problems) -> tuple[str, ...]:
    if not _present(body, "scope"):
        return ()
    value = body["scope"]
    if not isinstance(value, str):
        problems.add('scope must be a string of space-separated scope names, e.g. "read:tickets write:tickets"')
        return ()
    tokens = value.split(" ")
    if any(not t for t in tokens):
        problems.add("scope must be scope names separated by single spaces (found an empty name)")
    bad = [t for t in tokens if t and not _SCOPE_TOKEN.fullmatch(t)]
    if bad:
        problems.add(f"scope contains invalid names {', '.join(repr(t[:60]) for t in bad)} (RFC 6749 §3.3)")
    return tuple(dict.fromkeys(t for t in tokens if t))


def validate_client_metadata(
    body: Mapping[str, Any], *, allow_shared_secret: bool, public_web_clients: bool = False
) -> ClientMetadata:
    """Validate an RFC 7591 registration (or RFC 7592 update) body; raise MetadataError listing every problem.

    ``public_web_clients`` lets ``token_endpoint_auth_method`` "none" stand for a web (browser-based) public
    client too: Client ID Metadata Documents (``approvals.cimd``) describe such clients, always with PKCE.
    """
    if not isinstance(body, Mapping):
        raise MetadataError("invalid_client_metadata", ["client metadata must be a JSON object"])
    problems = _Problems()

    application_type = "web"
    if _present(body, "application_type"):
        value = body["application_type"]
        if value in ("web", "native"):
            application_type = value
        else:
            problems.add(f'application_type must be "web" or "native", got {value!r}')

    # "Given" even when malformed, so a bad list is reported once rather than also as missing.
    redirect_given = _present(body, "redirect_uris") and body["redirect_uris"] != []
    redirect_uris = _string_list(body, "redirect_uris", problems, redirect=True, max_length=MAX_URI_LENGTH)
    for uri in redirect_uris or ():
        for reason in redirect_uri_problems(uri, application_type):
            problems.add(reason.message, redirect=True)

    # Grant and response types (RFC 7591 §2.1).
    if _present(body, "grant_types"):
        grant_types = _string_list(body, "grant_types", problems)
        if grant_types is not None and not grant_types:
            problems.add("grant_types must not be empty")
            grant_types = None
    else:
        grant_types = ("authorization_code",) if redirect_given else ("client_credentials",)
    for grant in grant_types or ():
        if grant in REFUSED_GRANT_TYPES:
            problems.add(REFUSED_GRANT_TYPES[grant])
        elif grant not in GRANT_TYPES:
            problems.add(f"grant type {grant!r} is not supported; use one of {', '.join(sorted(GRANT_TYPES))}")
    if _present(body, "response_types"):
        response_types = _string_list(body, "response_types", problems)
    elif grant_types is not None:
        response_types = tuple(r for r, g in _GRANT_FOR_RESPONSE.items() if g in grant_types)
    else:
        response_types = None
    for rtype in response_types or ():
        if rtype not in RESPONSE_TYPES:
            problems.add(f"response type {rtype!r} is not supported; use code")
    if grant_types is not None and response_types is not None:
        for rtype, grant in _GRANT_FOR_RESPONSE.items():
            if rtype in response_types and grant not in grant_types:
                problems.add(f"response type {rtype!r} requires grant type {grant!r}")
            elif grant in grant_types and rtype not in response_types:
                problems.add(f"grant type {grant!r} requires response type {rtype!r}")
        if not redirect_given and any(g in grant_types for g in ("authorization_code", "implicit")):
            problems.add("redirect_uris is required for the authorization_code grant", redirect=True)

    # Client authentication and keys.
    method: str | None = "private_key_jwt"
    if _present(body, "token_endpoint_auth_method"):
        value = body["token_endpoint_auth_method"]
        if not isinstance(value, str) or value not in AUTH_METHODS:
            problems.add(f"token_endpoint_auth_method must be one of {', '.join(sorted(AUTH_METHODS))}, got {value!r}")
            method = None
        else:
            method = value
    if method in SHARED_SECRET_METHODS and not allow_shared_secret:
        problems.add(
            f"token_endpoint_auth_method {method} uses a shared secret, which this deployment forbids; "
            "use private_key_jwt or mutual TLS"
        )
    if method == "none":
        if application_type != "native" and not public_web_clients:
            problems.add('token_endpoint_auth_method "none" is only for native (public) clients')
        if grant_types is not None and "authorization_code" not in grant_types:
            problems.add('token_endpoint_auth_method "none" requires the authorization_code grant')
        if grant_types is not None and "client_credentials" in grant_types:
            problems.add('the client_credentials grant requires client authentication, not "none"')
    jwks = _jwks(body, problems)
    jwks_uri = _https_uri(body, "jwks_uri", problems)
    if _present(body, "jwks") and _present(body, "jwks_uri"):
        problems.add("jwks and jwks_uri are mutually exclusive (RFC 7591 §2)")
    elif method in JWKS_METHODS and not (_present(body, "jwks") or _present(body, "jwks_uri")):
        problems.add(f"token_endpoint_auth_method {method} requires jwks or jwks_uri")

    scope = _scope(body, problems)
    client_name = _string(body, "client_name", problems, max_length=200)
    uris = {name: _https_uri(body, name, problems) for name in ("client_uri", "logo_uri", "tos_uri", "policy_uri")}
    contacts = _string_list(body, "contacts", problems, max_length=320)
    software_id = _string(body, "software_id", problems)
    software_version = _string(body, "software_version", problems)

    # Registrar extensions.
    purpose = None
    if not _present(body, "purpose"):
        problems.add("purpose is required: say in 3 to 500 characters what this client is for")
    elif not isinstance(body["purpose"], str):
        problems.add("purpose must be a string")
    else:
        purpose = body["purpose"].strip()
        if not 3 <= len(purpose) <= 500:
            problems.add(f"purpose must be 3 to 500 characters long, got {len(purpose)}")
        elif not purpose.replace("\n", " ").replace("\t", " ").isprintable():
            problems.add("purpose must not contain control characters")
    requested_ttl = None
    if _present(body, "requested_ttl"):
        value = body["requested_ttl"]
        if type(value) is not int:
            problems.add(f"requested_ttl must be a whole number of seconds, got {type(value).__name__}")
        elif not 1 <= value <= MAX_TTL_SECONDS:
            problems.add(f"requested_ttl must be between 1 and {MAX_TTL_SECONDS} seconds (one year), got {value}")
        else:
            requested_ttl = value
    audiences = _string_list(body, "audiences", problems)
    for i, audience in enumerate(audiences or ()):
        if any(c.isspace() for c in audience):
            problems.add(f"audiences[{i}] must not contain whitespace")
    internal_only = False
    if _present(body, "internal_only"):
        value = body["internal_only"]
        if isinstance(value, bool):
            internal_only = value
        else:
            problems.add(f"internal_only must be true or false, got {value!r}")

    # Past this point every value is set: each None above came with a problem.
    problems.raise_if_any()
    assert purpose is not None and grant_types is not None and response_types is not None and method is not None
    return ClientMetadata(
        purpose=purpose,
        redirect_uris=redirect_uris or (),
        grant_types=grant_types,
        response_types=response_types,
        token_endpoint_auth_method=method,
        application_type=application_type,
        jwks=jwks,
        jwks_uri=jwks_uri,
        scope=scope,
        client_name=client_name,
        contacts=contacts or (),
        software_id=software_id,
        software_version=software_version,
        requested_ttl=requested_ttl,
        audiences=audiences or (),
        internal_only=internal_only,
        **uris,
    )
