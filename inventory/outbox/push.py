"""The IdP side of a delivery: which connector, what is sent, and the call each operation makes.

Nothing here touches the database (the batch path runs :func:`call_idp` on a pool thread); the caller
records what comes back (``inventory.outbox.record``). A create whose earlier attempt may have reached the
IdP looks for the client by its correlation marker (``ClientSpec.registrar_id`` = ``Client.registration_id``)
first and adopts what it finds, so a retry never leaves a duplicate behind. An IdP that cannot list is
called through ``inventory.outbox.journal`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from inventory.choices import ENDED_STATES, ClientState, CreatedVia, OutboxOperation
from inventory.connectors import build_connector
from inventory.connectors.base import BaseConnector, ClientSpec, PushResult, RemoteClient
from inventory.connectors.errors import AlreadyExists, ConnectorError, NotFound, NotSupported, Transient, Unconfirmed
from inventory.models import Client, IdPConnection
from inventory.outbox.config import connector_timeout
from inventory.outbox.leases import Claim
from portal.logs import log_event

logger = logging.getLogger(__name__)


@dataclass
class IdpResult:
    """What an entry's IdP call left at the IdP, for ``inventory.outbox.record`` to store."""

    push: PushResult | None  # None: nothing at the IdP (deleted, or already gone)
    gone: bool = False
    adopted: bool = False
    note: str = ""


# -- connectors -------------------------------------------------------------------------------------------


def connector_for(idp: IdPConnection, *, timeout: float | None = None) -> BaseConnector:
    connector = build_connector(idp.kind, idp.config or {}, idp.secrets or {}, connector_timeout(timeout))
    connector.label = idp.name
    return connector


class ConnectorCache:
    """Connectors by IdP connection, rebuilt when the connection's kind, config or secrets change.

    Building a connector creates an HTTP client (and a TLS context, ~50 ms); a worker process keeps one per
    connection. Thread-safe enough for Celery's thread pool: httpx clients may be shared between threads.
    """

    MAX = 64

    def __init__(self) -> None:
        self._items: dict[int, tuple[str, float | None, BaseConnector]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _fingerprint(idp: IdPConnection) -> str:
        material = json.dumps([idp.kind, idp.config, idp.secrets], sort_keys=True, default=str)
        return hashlib.sha256(material.encode()).hexdigest()

    def get(self, idp: IdPConnection, timeout: float | None) -> BaseConnector:
        fingerprint = self._fingerprint(idp)
        with self._lock:
            cached = self._items.get(idp.pk)
            if cached is not None and cached[0] == fingerprint and cached[1] == timeout:
                return cached[2]
        connector = connector_for(idp, timeout=timeout)
        with self._lock:
            stale = self._items.pop(idp.pk, None)
            if len(self._items) >= self.MAX:
                self._items.clear()
            self._items[idp.pk] = (fingerprint, timeout, connector)
        if stale is not None:
            stale[2].close()
        return connector

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for _, _, connector in items:
            connector.close()


# Connectors kept by a web process for the inline path (a new one costs a TLS context, ~50 ms).
INLINE_CONNECTORS = ConnectorCache()


def entry_connector(claim: Claim, connectors: ConnectorCache, timeout: float | None) -> BaseConnector | BaseException:
    """The entry's connector (from the cache), or the error that stands in for the call."""
    idp = claim.entry.idp
    if not idp.enabled:
        return Transient(f"IdP connection {idp.name!r} is disabled")
    try:
        return connectors.get(idp, timeout)
    except Exception as exc:  # a misconfigured connection: recorded like the call's own failure
        return exc


# -- what is sent -----------------------------------------------------------------------------------------


def client_spec(client: Client) -> ClientSpec:
    """What the IdP should hold for ``client``; ``registration_id`` is the correlation marker."""
    metadata = client.metadata or {}
    extra: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for key in ("grant_types", "response_types", "redirect_uris"):
        if isinstance(metadata.get(key), list):
            values[key] = list(metadata[key])
    chosen = metadata.get("client_id") if client.created_via == CreatedVia.CIMD else None
    return ClientSpec(
        registrar_id=client.registration_id,
        client_id=chosen if isinstance(chosen, str) and chosen else None,
        client_name=client.name,
        scopes=list(client.scopes or []),
        token_endpoint_auth_method=client.auth_method or "private_key_jwt",
        jwks=client.jwks or None,
        # Keys are Registrar's business: the IdP gets the key set Registrar fetched from a jwks_uri and vetted,
        # never the URI to fetch on its own (only a client registered before keys were fetched has none).
        jwks_uri=None if client.jwks else (client.jwks_uri or None),
        enabled=client.state not in ENDED_STATES and client.state != ClientState.SUSPENDED,
        expires_at=client.expires_at,
        software_id=client.software_id or None,
        software_version=client.software_version or None,
        extra=extra,
        **values,
    )


def find_by_marker(connector: BaseConnector, registrar_id: str) -> list[RemoteClient]:
    """Clients at the IdP carrying ``registrar_id`` as correlation marker ([] if the IdP cannot list)."""
    try:
        return [remote for remote in connector.list() if remote.registrar_id == registrar_id]
    except NotSupported:
        return []


# -- the calls --------------------------------------------------------------------------------------------


def call_idp(claim: Claim, connector: BaseConnector | BaseException) -> IdpResult | BaseException:
    """The IdP part of a delivery: no database access, so it may run on a pool thread.

    Returns what happened, exceptions included, for ``record.record_failure`` or the success paths.
    """
    if isinstance(connector, BaseException):
        return connector
    try:
        return push_entry(connector, claim, claim.entry.operation, claim.entry.client)
    except Exception as exc:
        return exc


def push_entry(
    connector: BaseConnector, claim: Claim, operation: str, client: Client, *, may_recreate: bool = True
) -> IdpResult:
    """``may_recreate=False``: an update that finds the client gone raises Unconfirmed instead of creating it
    again (an earlier, unanswered attempt may already have done so, at an IdP that cannot list)."""
    spec = client_spec(client)
    state = dict(client.idp_state or {})
    client_id = client.idp_client_id

    if operation == OutboxOperation.CREATE:
        if client_id:
            return IdpResult(push=None, note="already created")
        return _create(connector, claim, spec)

    if operation == OutboxOperation.UPDATE:
        if not client_id or state.get("deleted"):
            return _create(connector, claim, spec) if spec.enabled else IdpResult(push=None, note="nothing to update")
        try:
            return IdpResult(push=connector.update(client_id, spec, state))
        except NotFound:
            if not spec.enabled:
                return IdpResult(push=None, gone=True, note="gone at IdP")
            if not may_recreate:
                raise Unconfirmed(
                    f"IdP {claim.entry.idp.name!r} no longer has client {client_id}, and an earlier attempt to "
                    "update it never recorded its outcome: it may already have created a replacement that the "
                    "IdP offers no listing to find. Look at the IdP for a client with registrar_id/software_id "
                    f"{client.registration_id}; delete it there if present, then Retry."
                )
            return _create(connector, claim, spec, note="recreated")

    if operation == OutboxOperation.DISABLE:
        if not client_id:
            return _delete_by_marker(connector, spec.registrar_id)
        if state.get("deleted"):
            return IdpResult(push=None, gone=True, note="already gone")
        try:
            result = connector.disable(client_id, spec, state)
        except NotFound:
            return IdpResult(push=None, gone=True, note="gone at IdP")
        return IdpResult(push=result, gone=result.deleted)

    if operation == OutboxOperation.DELETE:
        if not client_id:
            return _delete_by_marker(connector, spec.registrar_id)
        if state.get("deleted"):
            return IdpResult(push=None, gone=True, note="already gone")
        with contextlib.suppress(NotFound):  # connectors treat "already gone" as deleted; some raise
            connector.delete(client_id, state)
        return IdpResult(push=None, gone=True)

    raise ConnectorError(f"unknown outbox operation {operation!r}")


def _create(connector: BaseConnector, claim: Claim, spec: ClientSpec, note: str = "") -> IdpResult:
    if claim.maybe_reached_idp:
        found = find_by_marker(connector, spec.registrar_id)
        if found:
            return _adopt(connector, found)
    try:
        return IdpResult(push=connector.create(spec), note=note)
    except AlreadyExists as exc:
        if exc.client_id:
            return IdpResult(push=PushResult(client_id=exc.client_id, remote_state={"adopted": True}), adopted=True)
        found = find_by_marker(connector, spec.registrar_id)
        if not found:
            raise
        return _adopt(connector, found)


def _adopt(connector: BaseConnector, found: list[RemoteClient]) -> IdpResult:
    """Keep the first client carrying our marker; remove any further duplicates."""
    keep, *extra = sorted(found, key=lambda remote: remote.client_id)
    for duplicate in extra:
        connector.delete(duplicate.client_id, {})
        log_event(
            logger, "outbox_duplicate_deleted", client_id=duplicate.client_id, registrar_id=duplicate.registrar_id
        )
    return IdpResult(push=PushResult(client_id=keep.client_id, remote_state={"adopted": True}), adopted=True)


def _delete_by_marker(connector: BaseConnector, registrar_id: str) -> IdpResult:
    """Delete/disable of a client we never stored an id for: remove whatever carries our marker."""
    for remote in find_by_marker(connector, registrar_id):
        connector.delete(remote.client_id, {})
    return IdpResult(push=None, gone=True)
