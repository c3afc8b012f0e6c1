"""The one censor: what counts as a secret before a value reaches the audit chain or a log line.

Both :func:`portal.audit.audit_record` (before/after payloads) and the structured logs
(:func:`portal.logs.log_event`) call :func:`censor`, so a key that is secret in one is secret in
the other. A mapping value is replaced by :data:`CENSORED` when

* its key is sensitive: its last word (split on ``_``, ``-``, ``.``) is one of :data:`SENSITIVE_KEY_WORDS`
  (``registration_access_token``, ``client_secret``, ``Authorization``, ``password`` ...), but not
  ``token_endpoint`` or ``client_secret_expires_at``; or it is one of ``extra_keys`` (a connector's own
  sensitive parameters);
* it is a private member of a JWK (:data:`JWK_PRIVATE_MEMBERS`, in a mapping that has ``kty``), so a public
  JWKS passes through untouched;

and an empty value (``None``, ``""``, ``[]``, ``{}``) is kept, so a reader can still see that nothing was set.
Strings containing one of ``secret_values`` (a token an IdP echoed into an error text) have it replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

CENSORED = "********"

#: A key is sensitive when its last word is one of these (an underscore inside a word is optional:
#: ``privateKey``, ``apikey``).
SENSITIVE_KEY_WORDS = (
    "token",
    "secret",
    "secrets",
    "password",
    "passwd",
    "passphrase",
    "assertion",
    "authorization",
    "cookie",
    "private_key",
    "api_key",
    "credential",
    "credentials",
)
_SENSITIVE_KEY = re.compile(
    r"(?:^|[_\-.])(?:" + "|".join(re.escape(w).replace("_", "_?") for w in SENSITIVE_KEY_WORDS) + r")$",
    re.IGNORECASE,
)
#: Private members of a JWK (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2): the one list, which
#: ``inventory.keys`` also refuses in a registered key set.
JWK_PRIVATE_MEMBER_ORDER = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
JWK_PRIVATE_MEMBERS = frozenset(JWK_PRIVATE_MEMBER_ORDER)

# Keys seen so far and whether they are sensitive: the regex runs once per distinct key, not once per value
# (censor runs over every audited value of every registration). Bounded, because keys of agent-supplied
# metadata are anyone's choice.
_KEY_CACHE: dict[str, bool] = {}
_KEY_CACHE_MAX = 4096
# Checked first: most values are scalars, and an isinstance() against the Mapping ABC costs ten times one
# against concrete types.
_SCALARS = (str, int, float, type(None))  # bool is an int
_EMPTY = (None, "")


def is_sensitive_key(key: Any, extra: Iterable[str] = ()) -> bool:
    """Whether values under ``key`` are secrets (see the module docstring)."""
    key = key if isinstance(key, str) else str(key)
    if extra and key in extra:
        return True
    known = _KEY_CACHE.get(key)
    if known is None:
        known = bool(_SENSITIVE_KEY.search(key))
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[key] = known
    return known


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | dict) and not value)


def censor(value: Any, *, extra_keys: Iterable[str] = (), secret_values: Iterable[str] = ()) -> Any:
    """A copy of ``value`` safe for the audit chain and logs; mappings, lists and tuples are walked."""
    if not extra_keys and not secret_values:
        return _censor_keys(value)
    needles = sorted({s for s in secret_values if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True)
    return _walk(value, frozenset(extra_keys), needles)


def _censor_keys(value: Any) -> Any:
    """:func:`censor` without extra keys or secret values: the audit chain's hot path."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict | Mapping):
        is_jwk = "kty" in value
        result: dict[Any, Any] = {}
        get = _KEY_CACHE.get
        for key, inner in value.items():
            sensitive = get(key)
            if sensitive is None:
                sensitive = is_sensitive_key(key)
            if (sensitive or (is_jwk and key in JWK_PRIVATE_MEMBERS)) and not _is_empty(inner):
                result[key] = CENSORED
            elif isinstance(inner, _SCALARS):
                result[key] = inner
            else:
                result[key] = _censor_keys(inner)
        return result
    if isinstance(value, list | tuple):
        censored = [_censor_keys(inner) for inner in value]
        return censored if isinstance(value, list) else tuple(censored)
    return value


def _walk(value: Any, extra: frozenset[str], needles: list[str]) -> Any:
    if isinstance(value, str):
        for needle in needles:
            value = value.replace(needle, CENSORED)
        return value
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict | Mapping):
        is_jwk = "kty" in value
        result = {}
        for key, inner in value.items():
            sensitive = is_sensitive_key(key, extra) or (is_jwk and key in JWK_PRIVATE_MEMBERS)
            result[key] = CENSORED if sensitive and not _is_empty(inner) else _walk(inner, extra, needles)
        return result
    if isinstance(value, list | tuple):
        censored = [_walk(inner, extra, needles) for inner in value]
        return censored if isinstance(value, list) else tuple(censored)
    return value
