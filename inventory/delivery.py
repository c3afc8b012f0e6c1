"""Delivering outbox entries to identity providers.

This is the one delivery code path: Celery workers (``inventory.tasks.deliver_client_outbox``), the
periodic requeue, and the registration API's inline 201 path (:func:`deliver_client_outbox_inline`) all
call :func:`deliver_client_outbox`.

How an entry is delivered exactly once, in order, without holding a transaction open over HTTP:

* **Order.** Only the *head* of a client's queue (its lowest-id ``pending`` entry) is ever worked on, so a
  DELETE queued behind a CREATE waits for it. Dead entries do not block the queue (an admin retries them).
* **Claim.** A worker leases the head with one conditional UPDATE (``claimed_until`` in the past or empty,
  ``attempts`` unchanged) that also counts the attempt. Only one UPDATE can win; the loser stops. The lease
  (``REGISTRAR_OUTBOX_LEASE_SECONDS``) is longer than the connector timeout times the few requests one
  delivery makes, so a live worker never loses it; a killed worker's lease runs out and
  ``requeue_outbox`` hands the entry to another worker.
* **Crashes between the IdP's answer and our commit.** An entry whose earlier attempt may have reached the
  IdP (``attempts`` was already > 0 when claimed) looks for the client at the IdP by its correlation marker
  (``ClientSpec.registrar_id`` = ``Client.registration_id``) before creating, and adopts what it finds, so
  a retry never leaves a duplicate behind. Reconciliation catches anything that still slips through.
* **Errors.** :class:`Transient` → retry with exponential backoff and jitter, up to
  ``REGISTRAR_OUTBOX_MAX_ATTEMPTS``; then, like :class:`BadRequest` and other non-transient errors, the
  entry is dead-lettered, the client flagged ``sync_failed``, and an audit event written.
  Error texts stored and logged come from the connectors, which censor secrets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory import lifecycle
from inventory.choices import ENDED_STATES, ClientState, OutboxOperation, OutboxStatus
from inventory.connectors import build_connector
from inventory.connectors.base import BaseConnector, ClientSpec, PushResult, RemoteClient, log_event
from inventory.connectors.errors import (
    AlreadyExists,
    ConnectorError,
    NotFound,
    NotSupported,
    Transient,
)
from inventory.lifecycle import client_transition
from inventory.models import Client, IdPConnection, OutboxEntry
from portal.audit import Actor, audit_record

logger = logging.getLogger(__name__)

OUTBOX_ACTOR = Actor.system("outbox")
DEFAULT_CONNECTOR_TIMEOUT = 10.0


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def lease_seconds() -> float:
    return _setting("REGISTRAR_OUTBOX_LEASE_SECONDS", 120.0)


def max_attempts() -> int:
    return int(_setting("REGISTRAR_OUTBOX_MAX_ATTEMPTS", 8))


def backoff_seconds(attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Delay before attempt ``attempts + 1``: exponential, capped, with jitter in [half, full].

    Jitter spreads the retries of many clients that failed together (an IdP outage) so they do not
    return as one thundering herd. An IdP's ``Retry-After`` is honoured as a floor (within the cap).
    """
    base = _setting("REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS", 5.0)
    cap = _setting("REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS", 600.0)
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    delay = (rng or random).uniform(delay / 2, delay)
    if retry_after:
        delay = max(delay, min(cap, retry_after))
    return delay


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    SUPERSEDED = "superseded"
    RETRY = "retry"
    DEAD = "dead"


@dataclass
class _Claim:
    entry: OutboxEntry
    worker: str
    #: An earlier attempt may have reached the IdP (it timed out, or its worker died mid-call).
    maybe_reached_idp: bool
    #: Nothing else was queued for the client when this entry was claimed.
    last: bool = False


# -- public entry points ------------------------------------------------------------------------------


def deliver_client_outbox(
    client_id: int, *, timeout: float | None = None, connectors: ConnectorCache | None = None
) -> bool:
    """Deliver one client's due outbox entries in id order.

    Returns True when nothing is left pending for the client (everything delivered, superseded or
    dead-lettered), False when an entry waits for a retry or another worker holds it. ``connectors`` is a
    per-process cache (workers pass one, so connections and TLS contexts are reused across tasks);
    without it connectors are built for this call and closed after.
    """
    worker = worker_name()
    cache = connectors if connectors is not None else ConnectorCache()
    try:
        while True:
            claim, nothing_pending = _claim_head(client_id, worker)
            if claim is None:
                return nothing_pending
            outcome = _deliver(claim, cache, timeout)
            if outcome == Outcome.RETRY:
                return False
            if claim.last:
                return True  # an entry queued since is nudged to a worker by its own commit
    finally:
        if connectors is None:
            cache.close()


def deliver_client_outbox_inline(client_id: int, *, timeout: float) -> bool:
    """The registration API's 201 path: deliver now with a short connector timeout.

    True when the client ended up active at the IdP (``state == active`` with an IdP client id). On a
    slow or failing IdP the entry is left scheduled for a worker and the caller answers 202.
    Must be called after the transaction that wrote the outbox entry has committed.
    """
    try:
        deliver_client_outbox(client_id, timeout=timeout)
    except Exception:  # the worker path will finish the job; the agent gets a 202
        logger.exception("event=inline_delivery_failed client_id=%s", client_id)
        return False
    return Client.objects.filter(
        pk=client_id, state=ClientState.ACTIVE, idp_client_id__isnull=False
    ).exists()


def due_client_ids(now: datetime | None = None, limit: int = 10_000) -> list[int]:
    """Clients with a pending entry that is due and not leased (or whose lease ran out)."""
    now = now or timezone.now()
    return list(
        OutboxEntry.objects.due(now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .order_by("client_id")
        .values_list("client_id", flat=True)
        .distinct()[:limit]
    )


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


def client_spec(client: Client) -> ClientSpec:
    """What the IdP should hold for ``client``; ``registration_id`` is the correlation marker."""
    metadata = client.metadata or {}
    extra: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for key in ("grant_types", "response_types", "redirect_uris"):
        if isinstance(metadata.get(key), list):
            values[key] = list(metadata[key])
    return ClientSpec(
        registrar_id=client.registration_id,
        client_name=client.name,
        scopes=list(client.scopes or []),
        token_endpoint_auth_method=client.auth_method or "private_key_jwt",
        jwks=client.jwks or None,
        jwks_uri=client.jwks_uri or None,
        enabled=client.state not in ENDED_STATES and client.state != ClientState.SUSPENDED,
        expires_at=client.expires_at,
        software_id=client.software_id or None,
        software_version=client.software_version or None,
        extra=extra,
        **values,
    )


def connector_for(idp: IdPConnection, *, timeout: float | None = None) -> BaseConnector:
    timeout = timeout or _setting("REGISTRAR_CONNECTOR_TIMEOUT_SECONDS", DEFAULT_CONNECTOR_TIMEOUT)
    return build_connector(idp.kind, idp.config or {}, idp.secrets or {}, timeout)


def find_by_marker(connector: BaseConnector, registrar_id: str) -> list[RemoteClient]:
    """Clients at the IdP carrying ``registrar_id`` as correlation marker ([] if the IdP cannot list)."""
    try:
        return [remote for remote in connector.list() if remote.registrar_id == registrar_id]
    except NotSupported:
        return []


# -- claiming --------------------------------------------------------------------------------------------


def _claim_head(client_id: int, worker: str) -> tuple[_Claim | None, bool]:
    """Lease the client's head entry if it is due. Returns ``(claim, nothing_pending)``."""
    now = timezone.now()
    # Two rows: the head, and whether anything is queued behind it (saves a query after the last one).
    heads = list(
        OutboxEntry.objects.filter(client_id=client_id, status=OutboxStatus.PENDING)
        .select_related("client", "idp")
        .order_by("id")[:2]
    )
    if not heads:
        return None, True
    entry = heads[0]
    if entry.next_attempt_at > now or (entry.claimed_until is not None and entry.claimed_until > now):
        return None, False  # not due yet, or another worker is on it
    previous_attempts, previous_holder = entry.attempts, entry.claimed_by
    lease_until = now + timedelta(seconds=lease_seconds())
    won = (
        OutboxEntry.objects.filter(pk=entry.pk, status=OutboxStatus.PENDING, attempts=previous_attempts)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .update(claimed_until=lease_until, claimed_by=worker[:128], attempts=F("attempts") + 1)
    )
    if won != 1:
        return None, False
    entry.claimed_until, entry.claimed_by, entry.attempts = lease_until, worker[:128], previous_attempts + 1
    if previous_holder:
        log_event("outbox_lease_taken_over", entry_id=entry.pk, previous=previous_holder, worker=worker)
    claim = _Claim(entry=entry, worker=worker, maybe_reached_idp=previous_attempts > 0, last=len(heads) == 1)
    return claim, False


# -- delivering one entry ----------------------------------------------------------------------------------


def _deliver(claim: _Claim, connectors: ConnectorCache, timeout: float | None) -> Outcome:
    entry, client = claim.entry, claim.entry.client
    operation = entry.operation

    if operation == OutboxOperation.CREATE and client.state in ENDED_STATES and not client.idp_client_id:
        # Ended before it ever reached the IdP: nothing to create. The DELETE/DISABLE queued by the
        # transition cleans up anything an earlier attempt might have left behind.
        return _finish(claim, status=OutboxStatus.SUPERSEDED, outcome=Outcome.SUPERSEDED)

    try:
        if not entry.idp.enabled:
            raise Transient(f"IdP connection {entry.idp.name!r} is disabled")
        connector = connectors.get(entry.idp, timeout)
        result = _push(connector, claim, operation, client)
    except Transient as exc:
        return _retry_or_die(claim, exc)
    except ConnectorError as exc:
        return _dead(claim, exc)
    except Exception as exc:  # a bug or an unexpected answer: dead-letter for a person, never loop
        logger.exception("event=outbox_delivery_crashed entry_id=%s", entry.pk)
        return _dead(claim, exc)
    return _succeed(claim, result)


@dataclass
class _Result:
    push: PushResult | None  # None: nothing at the IdP (deleted, or already gone)
    gone: bool = False
    adopted: bool = False
    note: str = ""


def _push(connector: BaseConnector, claim: _Claim, operation: str, client: Client) -> _Result:
    spec = client_spec(client)
    state = dict(client.idp_state or {})
    client_id = client.idp_client_id

    if operation == OutboxOperation.CREATE:
        if client_id:
            return _Result(push=None, note="already created")
        return _create(connector, claim, spec)

    if operation == OutboxOperation.UPDATE:
        if not client_id or state.get("deleted"):
            return _create(connector, claim, spec) if spec.enabled else _Result(push=None, note="nothing to update")
        try:
            return _Result(push=connector.update(client_id, spec, state))
        except NotFound:
            if not spec.enabled:
                return _Result(push=None, gone=True, note="gone at IdP")
            return _create(connector, claim, spec, note="recreated")

    if operation == OutboxOperation.DISABLE:
        if not client_id:
            return _delete_by_marker(connector, spec.registrar_id)
        if state.get("deleted"):
            return _Result(push=None, gone=True, note="already gone")
        try:
            result = connector.disable(client_id, spec, state)
        except NotFound:
            return _Result(push=None, gone=True, note="gone at IdP")
        return _Result(push=result, gone=result.deleted)

    if operation == OutboxOperation.DELETE:
        if not client_id:
            return _delete_by_marker(connector, spec.registrar_id)
        with contextlib.suppress(NotFound):  # connectors treat "already gone" as deleted; some raise
            connector.delete(client_id, state)
        return _Result(push=None, gone=True)

    raise ConnectorError(f"unknown outbox operation {operation!r}")


def _create(connector: BaseConnector, claim: _Claim, spec: ClientSpec, note: str = "") -> _Result:
    if claim.maybe_reached_idp:
        found = find_by_marker(connector, spec.registrar_id)
        if found:
            return _adopt(connector, found)
    try:
        return _Result(push=connector.create(spec), note=note)
    except AlreadyExists as exc:
        if exc.client_id:
            return _Result(push=PushResult(client_id=exc.client_id, remote_state={"adopted": True}), adopted=True)
        found = find_by_marker(connector, spec.registrar_id)
        if not found:
            raise
        return _adopt(connector, found)


def _adopt(connector: BaseConnector, found: list[RemoteClient]) -> _Result:
    """Keep the first client carrying our marker; remove any further duplicates."""
    keep, *extra = sorted(found, key=lambda remote: remote.client_id)
    for duplicate in extra:
        connector.delete(duplicate.client_id, {})
        log_event("outbox_duplicate_deleted", client_id=duplicate.client_id, registrar_id=duplicate.registrar_id)
    return _Result(push=PushResult(client_id=keep.client_id, remote_state={"adopted": True}), adopted=True)


def _delete_by_marker(connector: BaseConnector, registrar_id: str) -> _Result:
    """Delete/disable of a client we never stored an id for: remove whatever carries our marker."""
    for remote in find_by_marker(connector, registrar_id):
        connector.delete(remote.client_id, {})
    return _Result(push=None, gone=True)


# -- recording outcomes ----------------------------------------------------------------------------------


def _release(claim: _Claim, **fields: Any) -> bool:
    updated = OutboxEntry.objects.filter(
        pk=claim.entry.pk, status=OutboxStatus.PENDING, claimed_by=claim.worker[:128]
    ).update(claimed_until=None, claimed_by="", **fields)
    if not updated:
        log_event("outbox_lease_lost", level=logging.WARNING, entry_id=claim.entry.pk, worker=claim.worker)
    return bool(updated)


def _finish(claim: _Claim, *, status: str, outcome: Outcome) -> Outcome:
    _release(claim, status=status, delivered_at=timezone.now(), last_error="")
    log_event("outbox_" + outcome, entry_id=claim.entry.pk, client_id=claim.entry.client_id,
              operation=claim.entry.operation)
    return outcome


@transaction.atomic
def _succeed(claim: _Claim, result: _Result) -> Outcome:
    entry = claim.entry
    # The client as read with the claim. Only delivery writes the idp_* fields and we hold the lease, so a
    # plain UPDATE (which also row-locks the client) is enough; the state change below re-locks and
    # re-checks the state through the lifecycle service.
    client = entry.client
    now = timezone.now()
    fields: dict[str, Any] = {"last_synced_at": now}
    push = result.push
    if push is not None:
        previous = {} if (result.adopted or entry.operation == OutboxOperation.CREATE) else dict(client.idp_state or {})
        state = {**previous, **push.remote_state}
        if push.deleted:
            state = {"deleted": True}
        elif entry.operation != OutboxOperation.DISABLE:
            state.pop("deleted", None)
        fields["idp_client_id"] = client.idp_client_id = push.client_id
        fields["idp_state"] = client.idp_state = state
    elif result.gone:
        fields["idp_state"] = client.idp_state = {"deleted": True} if client.idp_client_id else {}

    disabled = entry.operation in (OutboxOperation.DISABLE, OutboxOperation.DELETE)
    if disabled:
        fields["idp_disabled_at"] = Coalesce(F("idp_disabled_at"), Value(now))
    if client.sync_failed and not client.outbox.filter(status=OutboxStatus.DEAD).exclude(pk=entry.pk).exists():
        fields["sync_failed"] = client.sync_failed = False
    Client.objects.filter(pk=client.pk).update(**fields)
    _release(claim, status=OutboxStatus.DONE, delivered_at=now, last_error="")

    if disabled:
        client.idp_disabled_at = client.idp_disabled_at or now
        # Added by the lifecycle work (computes expiry overshoot); optional so either branch order works.
        record = getattr(lifecycle, "client_record_idp_disabled", None)
        if record is not None:
            record(client.pk, client.idp_disabled_at)
    if entry.operation in (OutboxOperation.CREATE, OutboxOperation.UPDATE) and client.state == ClientState.PROVISIONING:
        try:
            client_transition(client=client, target=ClientState.ACTIVE, actor=OUTBOX_ACTOR,
                              reason=f"created at IdP {entry.idp.name}", push_to_idp=False)
        except lifecycle.IllegalTransition:
            client.refresh_from_db(fields=["state"])  # ended meantime; its DELETE/DISABLE is queued behind us
    if entry.operation != OutboxOperation.CREATE or result.adopted or client.state != ClientState.ACTIVE:
        audit_record(
            actor=OUTBOX_ACTOR,
            action=f"client.idp_{entry.operation}" + ("_adopted" if result.adopted else ""),
            object_type="client",
            object_id=client.registration_id,
            after={"idp": entry.idp.name, "idp_client_id": client.idp_client_id, "note": result.note,
                   "attempts": entry.attempts},
            policy_version=client.policy_version,
        )
    log_event("outbox_delivered", entry_id=entry.pk, client_id=client.pk, operation=entry.operation,
              idp_client_id=client.idp_client_id, adopted=result.adopted or None, note=result.note or None)
    return Outcome.DELIVERED


def _retry_or_die(claim: _Claim, exc: Transient) -> Outcome:
    attempts = claim.entry.attempts  # the claim already counted this attempt
    if attempts >= max_attempts():
        return _dead(claim, exc)
    delay = backoff_seconds(attempts, retry_after=exc.retry_after)
    _release(claim, next_attempt_at=timezone.now() + timedelta(seconds=delay), last_error=_error_text(exc))
    log_event("outbox_retry_scheduled", level=logging.WARNING, entry_id=claim.entry.pk,
              client_id=claim.entry.client_id, operation=claim.entry.operation, attempts=attempts,
              delay_s=round(delay, 1), error=type(exc).__name__)
    return Outcome.RETRY


@transaction.atomic
def _dead(claim: _Claim, exc: BaseException) -> Outcome:
    entry = claim.entry
    client = Client.objects.select_for_update().get(pk=entry.client_id)
    if not _release(claim, status=OutboxStatus.DEAD, last_error=_error_text(exc)):
        return Outcome.RETRY  # another worker owns it now; let it decide
    if not client.sync_failed:
        client.sync_failed = True
        client.save(update_fields=["sync_failed"])
    audit_record(
        actor=OUTBOX_ACTOR,
        action="outbox.dead_lettered",
        object_type="client",
        object_id=client.registration_id,
        after={"entry": entry.pk, "operation": entry.operation, "idp": entry.idp.name,
               "attempts": entry.attempts, "error": _error_text(exc)[:500]},
        policy_version=client.policy_version,
    )
    log_event("outbox_dead_lettered", level=logging.ERROR, entry_id=entry.pk, client_id=client.pk,
              operation=entry.operation, error=type(exc).__name__)
    return Outcome.DEAD


def _error_text(exc: BaseException) -> str:
    # Connector errors are censored by the connector; anything else is reduced to its type and message.
    return f"{type(exc).__name__}: {exc}"[:4000]
