"""A registered client's keys: the key set behind a ``jwks_uri``, fetched and vetted, and the keys as audited.

The rules themselves are ``inventory.keys`` (one validator for every path); this module turns a refusal into
the RFC 7591 answer and says where a client's keys came from in its audit events.
"""

from __future__ import annotations

from typing import Any

from approvals.metadata import ClientMetadata
from approvals.oauth2.errors import ERR_INVALID_METADATA, BadRequest
from inventory.keys import FetchedKeySet, KeySetError, jwks_fetch, jwks_thumbprints


def keys_fetch(jwks_uri: str) -> FetchedKeySet:
    """The key set behind ``jwks_uri``, fetched safely and checked like an inline ``jwks``; BadRequest (400
    invalid_client_metadata) naming the reason otherwise. Runs outside any transaction: it waits on the network."""
    try:
        return jwks_fetch(jwks_uri)
    except KeySetError as exc:
        raise BadRequest(ERR_INVALID_METADATA, str(exc))


def keys_audit(md: ClientMetadata, fetched: FetchedKeySet | None) -> dict[str, Any]:
    """The client's keys for an audit event: where they came from and their RFC 7638 thumbprints."""
    if fetched is not None:
        return {
            "source": "jwks_uri",
            "jwks_uri": fetched.uri,
            "fetched_from": fetched.address,
            "thumbprints": fetched.thumbprints,
        }
    if md.jwks is not None:
        return {"source": "jwks", "thumbprints": jwks_thumbprints(md.jwks)}
    return {"source": None, "thumbprints": []}
