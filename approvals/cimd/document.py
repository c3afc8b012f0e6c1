"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-03): the URL rules and the document
rules, pure — a URL and a parsed document in, a ``CimdReview`` or a ``MetadataError`` listing every problem out.

A CIMD client's ``client_id`` is an https URL; the JSON document served there is its client metadata. The
document is checked by the RFC 7591 validator every other path uses (``approvals.metadata``), plus what the
draft adds:

- ``client_id`` is present and equals the URL the document was fetched from, character for character (§4.1);
- ``client_name`` and ``redirect_uris`` are present (Registrar's rule: an approver must see who and where);
- ``token_endpoint_auth_method`` is ``none`` (a public client, PKCE) or ``private_key_jwt`` with ``jwks`` or
  ``jwks_uri``; absent, it is ``none`` without keys and ``private_key_jwt`` with them. Shared secrets are
  impossible: ``client_secret`` and ``client_secret_expires_at`` are refused (§4.1), and so are the
  ``client_secret_*`` methods;
- ``application_type``, when absent, is ``native`` if a redirect URI is plain http on a loopback host (the
  RFC 8252 rule), else ``web``; a public web client (``none``) is allowed;
- the Registrar extensions (``purpose``, ``requested_ttl``, ``audiences``, ``internal_only``) are governance
  decisions, not the client's: in a document they are ignored (and listed), and the submitter supplies them.

Redirect URIs only on a loopback host are flagged, not refused: the draft (§6.5) warns that CIMD cannot stop
another program on the user's machine from claiming such a client. The approver sees the URL's host, every
redirect host and whether it is the ``client_id``'s host.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from approvals.metadata import ClientMetadata, MetadataError, validate_client_metadata
from approvals.policy import LOOPBACK_HOSTS

# What a document may not carry (§4.1), and what Registrar decides rather than the client.
SECRET_FIELDS = ("client_secret", "client_secret_expires_at")
GOVERNANCE_FIELDS = ("purpose", "requested_ttl", "audiences", "internal_only")
AUTH_METHODS = ("none", "private_key_jwt")
# The purpose the validator needs while a document is checked on its own (fetched, cached, re-fetched);
# a registration replaces it with the submitter's purpose.
DOCUMENT_PURPOSE = "client described by a Client ID Metadata Document"
MAX_URL_LENGTH = 2000


def client_id_url_problems(url: Any) -> list[str]:
    """Why ``url`` cannot be a CIMD ``client_id`` (draft §3): https, a host, a path other than "/", no "." or ".."
    segment, no fragment, no user:password. A query is allowed (the draft discourages it)."""
    if not isinstance(url, str) or not url:
        return ["the client_id URL must be a non-empty string"]
    if len(url) > MAX_URL_LENGTH:
        return [f"the client_id URL is longer than {MAX_URL_LENGTH} characters"]
    if not url.isprintable() or any(c.isspace() for c in url):
        return ["the client_id URL must not contain spaces or control characters"]
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return [f"the client_id URL {url[:120]!r} is not a valid URL"]
    problems = []
    if parts.scheme != "https":
        problems.append(f"the client_id URL must use https, not {parts.scheme or 'no scheme'}")
    if not host:
        problems.append("the client_id URL has no host")
    if "@" in parts.netloc:
        problems.append("the client_id URL must not carry a user name or password")
    if parts.path in ("", "/"):
        problems.append("the client_id URL must have a path (e.g. https://app.example.com/oauth/client.json)")
    elif any(segment in (".", "..") for segment in parts.path.split("/")):
        problems.append('the client_id URL must not contain "." or ".." path segments')
    if "#" in url:
        problems.append("the client_id URL must not contain a fragment")
    return problems


@dataclass(frozen=True, slots=True)
class RedirectHost:
    """One redirect URI as the approver sees it."""

    uri: str
    host: str
    same_host: bool  # the same host as the client_id URL
    loopback: bool


@dataclass(frozen=True, slots=True)
class CimdReview:
    """A valid document and what an approver needs to judge it."""

    client_id: str
    host: str
    metadata: ClientMetadata
    redirects: tuple[RedirectHost, ...]
    ignored_fields: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def loopback_only(self) -> bool:
        """Every redirect URI is on a loopback host: anyone on the user's machine could claim this client."""
        return bool(self.redirects) and all(r.loopback for r in self.redirects)

    @property
    def redirect_hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.host for r in self.redirects))

    @property
    def foreign_redirect_hosts(self) -> tuple[str, ...]:
        """Redirect hosts other than the client_id's host (loopback ones aside)."""
        return tuple(dict.fromkeys(r.host for r in self.redirects if not r.same_host and not r.loopback))


def _host(uri: str) -> str:
    try:
        return (urlsplit(uri).hostname or "").lower()
    except ValueError:
        return ""


def validate_cimd_document(url: str, document: Any, *, purpose: str | None = None) -> CimdReview:
    """Check the document fetched from ``url``; raise MetadataError (``invalid_client_metadata``, or
    ``invalid_redirect_uri`` when only redirect URIs are wrong) listing every problem.

    ``purpose`` is the submitter's (the document cannot supply one); without it a placeholder is used, for
    checking a document on its own.
    """
    problems = [f"{p}" for p in client_id_url_problems(url)]
    if problems:
        raise MetadataError("invalid_client_metadata", problems)
    if not isinstance(document, Mapping):
        raise MetadataError("invalid_client_metadata", ["the client metadata document must be a JSON object"])

    client_id = document.get("client_id")
    if client_id is None:
        problems.append("client_id is missing: the document must name its own URL as client_id")
    elif client_id != url:
        shown = client_id[:200] if isinstance(client_id, str) else type(client_id).__name__
        problems.append(f"client_id {shown!r} is not the URL the document was fetched from ({url!r})")
    for name in SECRET_FIELDS:
        if name in document:
            problems.append(f"{name} must not appear in a client metadata document: it is public")
    if document.get("client_name") is None:
        problems.append("client_name is required: the approver and the user must see who the client is")
    redirect_uris = document.get("redirect_uris")
    if redirect_uris is None or redirect_uris == []:
        problems.append("redirect_uris is required: a CIMD client signs users in through redirects")
    has_keys = document.get("jwks") is not None or document.get("jwks_uri") is not None
    method = document.get("token_endpoint_auth_method")
    if method is None:
        method = "private_key_jwt" if has_keys else "none"
    elif method not in AUTH_METHODS:
        problems.append(
            f"token_endpoint_auth_method must be none (a public client with PKCE) or private_key_jwt, got "
            f"{str(method)[:60]!r}: a document is public, so it cannot use a shared secret"
        )
    if method == "none" and has_keys:
        problems.append('token_endpoint_auth_method "none" takes no jwks or jwks_uri; use private_key_jwt')

    body: dict[str, Any] = {
        k: copy.deepcopy(v) for k, v in document.items() if k not in ("client_id", *SECRET_FIELDS, *GOVERNANCE_FIELDS)
    }
    ignored = tuple(k for k in GOVERNANCE_FIELDS if k in document)
    if isinstance(method, str) and method in AUTH_METHODS:
        body["token_endpoint_auth_method"] = method
    else:
        body.pop("token_endpoint_auth_method", None)
    if body.get("application_type") is None and isinstance(redirect_uris, list):
        loopback_http = any(
            isinstance(u, str) and u.startswith("http://") and _host(u) in LOOPBACK_HOSTS for u in redirect_uris
        )
        body["application_type"] = "native" if loopback_http else "web"
    body["purpose"] = purpose if purpose is not None else DOCUMENT_PURPOSE

    own_problems = len(problems)
    try:
        metadata = validate_client_metadata(body, allow_shared_secret=False, public_web_clients=True)
    except MetadataError as exc:
        problems.extend(exc.reasons)
        # invalid_redirect_uri only when the validator's redirect problems are all there is
        error = exc.error if not own_problems else "invalid_client_metadata"
        raise MetadataError(error, problems) from None
    if problems:
        raise MetadataError("invalid_client_metadata", problems)

    host = _host(url)
    redirects = tuple(
        RedirectHost(uri=u, host=_host(u), same_host=_host(u) == host, loopback=_host(u) in LOOPBACK_HOSTS)
        for u in metadata.redirect_uris
    )
    warnings = []
    if redirects and all(r.loopback for r in redirects):
        warnings.append(
            "every redirect URI is on a loopback host: CIMD cannot stop another program on the user's machine "
            "from using this client_id (draft §6.5)"
        )
    foreign = [r.host for r in redirects if not r.same_host and not r.loopback]
    if foreign:
        warnings.append(f"redirect hosts {', '.join(dict.fromkeys(foreign))} differ from the client_id host {host}")
    if ignored:
        warnings.append(f"the document's {', '.join(ignored)} are ignored: Registrar's submitter decides them")
    return CimdReview(
        client_id=url,
        host=host,
        metadata=metadata,
        redirects=redirects,
        ignored_fields=ignored,
        warnings=tuple(warnings),
    )


__all__ = [
    "AUTH_METHODS",
    "DOCUMENT_PURPOSE",
    "CimdReview",
    "RedirectHost",
    "client_id_url_problems",
    "validate_cimd_document",
]
