"""Drift of a pinned Client ID Metadata Document, pure: the pinned document and key set against a re-fetched
one, classified (docs/cimd.md "Pinning and drift").

- ``same``: the SHA-256 matches, or the documents are equal as JSON (whitespace or member order changed);
- ``neutral``: differs in nothing that grants or presents anything (``software_version``, ``contacts`` …):
  applied and audited;
- ``narrowing``: only removes — fewer redirect URIs, scopes, grant or response types, keys removed — and may
  be applied and audited without review;
- ``widening``: anything else that matters goes back to review while the IdP keeps the pinned version: a new
  redirect URI (a new host above all), a new grant or response type, more scope, a weaker or different
  authentication method, new or changed keys or a different ``jwks_uri``, a different ``application_type``,
  and a change to what the user sees at consent (``client_name``, ``client_uri``, ``logo_uri``, ``tos_uri``,
  ``policy_uri``: a client renaming itself is how consent phishing starts).

``diff`` is a unified diff of the two documents, pretty-printed with sorted members, for the approver and the
explain page.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from approvals.cimd.document import CimdReview
from inventory.keys import jwks_thumbprints

SAME = "same"
NEUTRAL = "neutral"
NARROWING = "narrowing"
WIDENING = "widening"
PRESENTATION_FIELDS = ("client_name", "client_uri", "logo_uri", "tos_uri", "policy_uri")


@dataclass(frozen=True)
class Drift:
    kind: str
    widening: tuple[str, ...] = ()
    narrowing: tuple[str, ...] = ()
    diff: str = ""

    @property
    def needs_review(self) -> bool:
        return self.kind == WIDENING


def _host(uri: str) -> str:
    try:
        return (urlsplit(uri).hostname or "").lower()
    except ValueError:
        return ""


def document_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A unified diff of two documents, pretty-printed with sorted members."""
    left = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    right = json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return "\n".join(difflib.unified_diff(left, right, "pinned", "fetched", lineterm=""))


def classify(
    *,
    pinned_sha256: str,
    pinned: CimdReview,
    pinned_document: Mapping[str, Any],
    pinned_keys: Mapping[str, Any] | None,
    fetched_sha256: str,
    fetched: CimdReview,
    fetched_document: Mapping[str, Any],
    fetched_keys: Mapping[str, Any] | None,
) -> Drift:
    """How the re-fetched document differs from the pinned one (module docstring)."""
    if fetched_sha256 == pinned_sha256 or (fetched_document == pinned_document and fetched_keys == pinned_keys):
        return Drift(SAME)
    old, new = pinned.metadata, fetched.metadata
    widening = list(old.narrowing_problems(new))
    old_hosts = {_host(u) for u in old.redirect_uris}
    new_hosts = [h for h in dict.fromkeys(_host(u) for u in new.redirect_uris) if h not in old_hosts]
    if new_hosts:
        widening.append(f"adds redirect hosts {', '.join(new_hosts)}")
    if new.token_endpoint_auth_method != old.token_endpoint_auth_method and not any(
        "token_endpoint_auth_method" in w for w in widening
    ):
        widening.append(
            f"changes token_endpoint_auth_method from {old.token_endpoint_auth_method} to "
            f"{new.token_endpoint_auth_method}"
        )
    if new.jwks_uri != old.jwks_uri and new.jwks_uri is not None:
        widening.append(f"changes jwks_uri to {new.jwks_uri}")
    old_keys, new_keys = set(jwks_thumbprints(pinned_keys)), jwks_thumbprints(fetched_keys)
    added_keys = [k for k in new_keys if k not in old_keys]
    if added_keys:
        widening.append(f"adds or changes keys {', '.join(added_keys)}")
    for name in PRESENTATION_FIELDS:
        if getattr(old, name) != getattr(new, name):
            widening.append(f"changes {name} from {getattr(old, name)!r} to {getattr(new, name)!r}")

    narrowing = []
    removed = [u for u in old.redirect_uris if u not in new.redirect_uris]
    if removed:
        narrowing.append(f"removes redirect URIs {', '.join(removed)}")
    for label, before, after in (
        ("scopes", old.scope, new.scope),
        ("grant types", old.grant_types, new.grant_types),
        ("response types", old.response_types, new.response_types),
    ):
        gone = [x for x in before if x not in after]
        if gone:
            narrowing.append(f"removes {label} {', '.join(gone)}")
    removed_keys = [k for k in old_keys if k not in set(new_keys)]
    if removed_keys:
        narrowing.append(f"removes keys {', '.join(sorted(removed_keys))}")

    diff = document_diff(pinned_document, fetched_document)
    if widening:
        return Drift(WIDENING, tuple(widening), tuple(narrowing), diff)
    return Drift(NARROWING if narrowing else NEUTRAL, (), tuple(narrowing), diff)


__all__ = ["NARROWING", "NEUTRAL", "SAME", "WIDENING", "Drift", "classify", "document_diff"]
