"""Delivering outbox entries to identity providers.

This is the one delivery code path: Celery workers (``inventory.tasks.deliver_client_outbox``), the
periodic requeue, and the registration API's inline 201 path (:func:`deliver_client_outbox_inline`) all
call :func:`deliver_client_outbox`.

How an entry is delivered exactly once, in order, without holding a transaction open over HTTP:

* **Order.** Only the *head* of a client's queue (its lowest-id ``pending`` entry) is ever worked on, so a
  DELETE queued behind a CREATE waits for it. Dead entries do not block the queue (an admin retries them).
* **Claim.** A worker leases the head with one conditional UPDATE (``claimed_until`` in the past or empty,
  ``attempts`` unchanged) that also counts the attempt. Only one UPDATE can win; the loser stops. The bulk
  path leases up to ``CLAIM_CHUNK`` heads per UPDATE and starts an IdP call only while the entry's lease
  (``REGISTRAR_OUTBOX_LEASE_SECONDS``) still has room for the longest delivery (two connector timeouts and
  a margin), giving the rest back otherwise, so a live worker never loses a lease under a call in flight;
  a killed worker's leases run out and ``requeue_outbox`` hands the entries to another worker.
* **Crashes between the IdP's answer and our commit.** An entry whose earlier attempt may have reached the
  IdP (``attempts`` was already > 0 when claimed) looks for the client at the IdP by its correlation marker
  (``ClientSpec.registrar_id`` = ``Client.registration_id``) before creating, and adopts what it finds, so
  a retry never leaves a duplicate behind. Reconciliation catches anything that still slips through.
  An IdP that cannot list (``BaseConnector.can_list``) offers nothing to look at: every call to it is
  journaled instead (``inventory.journal``: intent before the call, the answer stored the moment it
  arrives), runs in the recording thread, and a create whose answer was lost is never repeated blindly
  (``Unconfirmed``: a sync failure for a person). Its management 401/403 is ``AccessDenied``, never "gone".
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
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    AccessDenied,
    AlreadyExists,
    ConnectorError,
    NotFound,
    NotSupported,
    Transient,
    Unconfirmed,
)
from inventory.journal import journal_clear, journal_land, journal_start, unconfirmed_create
from inventory.lifecycle import client_transition
from inventory.models import Client, IdPConnection, OutboxEntry
from portal import logs
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
    client_id: int,
    *,
    timeout: float | None = None,
    connectors: ConnectorCache | None = None,
    inline: bool = False,
) -> bool:
    """Deliver one client's due outbox entries in id order.

    Returns True when nothing is left pending for the client (everything delivered, superseded or
    dead-lettered), False when an entry waits for a retry or another worker holds it. ``connectors`` is a
    per-process cache (workers pass one, so connections and TLS contexts are reused across tasks);
    without it connectors are built for this call and closed after. ``inline`` (the 201 path) leaves an
    IdP that cannot list to a worker: see :func:`deliver_client_outbox_inline`.
    """
    worker = worker_name()
    cache = connectors if connectors is not None else ConnectorCache()
    try:
        while True:
            claim, nothing_pending = _claim_head(client_id, worker)
            if claim is None:
                return nothing_pending
            outcome = _deliver(claim, cache, timeout, inline=inline)
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
    slow or failing IdP the entry is left scheduled for a worker and the caller answers 202. An IdP that
    cannot list is not called here at all: a short timeout there turns a slow answer into a lost one, which
    only a person can sort out (``inventory.journal``), so a worker creates it with the full timeout.
    Must be called after the transaction that wrote the outbox entry has committed.
    """
    try:
        deliver_client_outbox(client_id, timeout=timeout, connectors=_INLINE_CONNECTORS, inline=True)
    except Exception:  # the worker path will finish the job; the agent gets a 202
        logger.exception("event=inline_delivery_failed client_id=%s", client_id)
        return False
    return Client.objects.filter(pk=client_id, state=ClientState.ACTIVE, idp_client_id__isnull=False).exists()


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


# Connectors kept by a web process for the inline path (a new one costs a TLS context, ~50 ms).
_INLINE_CONNECTORS = ConnectorCache()


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


def connector_for(idp: IdPConnection, *, timeout: float | None = None) -> BaseConnector:
    timeout = timeout or _setting("REGISTRAR_CONNECTOR_TIMEOUT_SECONDS", DEFAULT_CONNECTOR_TIMEOUT)
    connector = build_connector(idp.kind, idp.config or {}, idp.secrets or {}, timeout)
    connector.label = idp.name
    return connector


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
        OutboxEntry.objects.filter(
            pk=entry.pk, status=OutboxStatus.PENDING, attempts=previous_attempts, next_attempt_at__lte=now
        )
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


def _deliver(claim: _Claim, connectors: ConnectorCache, timeout: float | None, *, inline: bool = False) -> Outcome:
    attempt = _attempt(claim, connectors, timeout, inline=inline)
    if isinstance(attempt, Outcome):
        return attempt
    return _succeed(claim, attempt)


def _attempt(
    claim: _Claim, connectors: ConnectorCache, timeout: float | None, *, inline: bool = False
) -> _Result | Outcome:
    """Call the IdP for a claimed entry. A result to record, or the outcome already recorded."""
    superseded = _supersede_if_ended(claim)
    if superseded is not None:
        return superseded
    connector = _connector(claim, connectors, timeout)
    if _journaled(connector):
        if inline:
            # Not attempted here: a worker creates it with the full connector timeout (the intake nudges one
            # when the inline delivery did not finish).
            _unclaim([claim])
            return Outcome.RETRY
        answer = _journaled_call(claim, connector)
    else:
        answer = _call(claim, connector)
    return _record_failure(claim, answer) if isinstance(answer, BaseException) else answer


def _supersede_if_ended(claim: _Claim) -> Outcome | None:
    """A CREATE for a client that ended before it ever reached the IdP: nothing to create. The DELETE/DISABLE
    queued by the transition cleans up anything an earlier attempt might have left behind."""
    client = claim.entry.client
    if claim.entry.operation == OutboxOperation.CREATE and client.state in ENDED_STATES and not client.idp_client_id:
        return _finish(claim, status=OutboxStatus.SUPERSEDED, outcome=Outcome.SUPERSEDED)
    return None


def _connector(claim: _Claim, connectors: ConnectorCache, timeout: float | None) -> BaseConnector | BaseException:
    """The entry's connector (from the cache), or the error that stands in for the call."""
    idp = claim.entry.idp
    if not idp.enabled:
        return Transient(f"IdP connection {idp.name!r} is disabled")
    try:
        return connectors.get(idp, timeout)
    except Exception as exc:  # a misconfigured connection: recorded like the call's own failure
        return exc


def _call(claim: _Claim, connector: BaseConnector | BaseException) -> _Result | BaseException:
    """The IdP part of a delivery: no database access, so it may run on a pool thread.

    Returns what happened, exceptions included, for :func:`_record_failure` or the success paths.
    """
    if isinstance(connector, BaseException):
        return connector
    try:
        return _push(connector, claim, claim.entry.operation, claim.entry.client)
    except Exception as exc:
        return exc


# -- IdPs that cannot list: journaled calls (inventory.journal) ---------------------------------------------


def _journaled(connector: BaseConnector | BaseException) -> bool:
    return isinstance(connector, BaseConnector) and not connector.can_list


def _journaled_call(claim: _Claim, connector: BaseConnector) -> _Result | BaseException:
    """:func:`_call` for an IdP that cannot list, in the recording thread (it writes the journal).

    Before the call: an answer an earlier attempt stored is adopted, and a create an earlier attempt may
    have made unseen is refused (:class:`Unconfirmed`). The intent is written, the call made, and its answer
    stored on the client at once (:func:`journal_land`); a failure that proves the IdP did nothing clears the
    intent, and a create that may have taken effect unseen becomes :class:`Unconfirmed` right away.
    """
    entry, client = claim.entry, claim.entry.client
    operation = entry.operation
    unsure = entry.idp_call_started_at is not None  # an earlier attempt's call never recorded its outcome
    if operation == OutboxOperation.CREATE and client.idp_client_id:
        return _Result(push=None, adopted=True, note="answer stored by an earlier attempt")
    creates = operation == OutboxOperation.CREATE or (
        operation == OutboxOperation.UPDATE and (not client.idp_client_id or (client.idp_state or {}).get("deleted"))
    )
    blind_retry = connector.config.get("recreate_unconfirmed") is True
    if creates and unsure and not blind_retry:
        started = entry.idp_call_started_at.strftime("%Y-%m-%d %H:%M:%S")
        return _unconfirmed_create(
            claim, cause=f"an earlier attempt's call, started {started} UTC, never recorded its outcome"
        )
    if operation in (OutboxOperation.DELETE, OutboxOperation.DISABLE) and not client.idp_client_id and not blind_retry:
        earlier = unconfirmed_create(client, exclude=entry.pk)
        if earlier is not None:
            return Unconfirmed(
                f"IdP {entry.idp.name!r} may hold this client: an earlier {earlier.get_operation_display().lower()} "
                "never learnt its answer, so Registrar has no id to remove, and the IdP offers no listing to find "
                f"it by. Look at the IdP for a client with registrar_id/software_id {client.registration_id}, "
                "delete it there, then mark this change resolved."
            )
    if not journal_start(entry, claim.worker):
        return Transient("the lease on this entry was lost before the call", reached_idp=False)
    try:
        result = _push(connector, claim, operation, client, may_recreate=blind_retry or not unsure)
    except AccessDenied as exc:
        if operation in (OutboxOperation.DELETE, OutboxOperation.DISABLE) and unsure:
            # Our own earlier delete, whose answer was lost, is what the IdP answers for: the token was
            # good until that call (its last answer was stored), and only the delete could end it since.
            result = _Result(
                push=None,
                gone=True,
                note="gone: an earlier attempt's delete went unanswered and the IdP now refuses its token",
            )
        else:
            journal_clear(entry, claim.worker)
            if operation == OutboxOperation.UPDATE and unsure:
                exc.message += (
                    "; an earlier update's answer was lost, and an IdP that rotates the registration access token "
                    "on every update (RFC 7592) refuses the old one after it: Registrar can no longer manage this "
                    "client there. Delete it at the IdP, then retire or revoke it here and mark that change resolved"
                )
            return exc
    except Transient as exc:
        if not exc.reached_idp:
            journal_clear(entry, claim.worker)
        elif creates and not blind_retry:
            return _unconfirmed_create(claim, cause=str(exc))
        return exc
    except Unconfirmed as exc:
        return exc
    except ConnectorError as exc:  # the IdP answered and refused: nothing happened there
        journal_clear(entry, claim.worker)
        return exc
    except Exception as exc:  # an answer we could not use: it may have taken effect
        return exc
    journal_land(entry, claim.worker, _idp_fields(entry, client, result))
    return result


def _unconfirmed_create(claim: _Claim, *, cause: str) -> Unconfirmed:
    entry, client = claim.entry, claim.entry.client
    return Unconfirmed(
        f"IdP {entry.idp.name!r} may have created this client without Registrar learning its answer ({cause}), "
        "and it offers no listing to check. Registrar does not create it again by itself: that could leave a "
        f"duplicate nobody can find. Look at the IdP for a client with registrar_id/software_id "
        f"{client.registration_id}; delete it there if present, then Retry. (An admin can let Registrar retry "
        'such creates itself, accepting that risk: the IdP connection\'s config "recreate_unconfirmed": true.)'
    )


def _record_failure(claim: _Claim, exc: BaseException) -> Outcome:
    if isinstance(exc, Transient):
        return _retry_or_die(claim, exc)
    if not isinstance(exc, ConnectorError):  # a bug or an unexpected answer: dead-letter for a person, never loop
        logger.error("event=outbox_delivery_crashed entry_id=%s", claim.entry.pk, exc_info=exc)
    return _dead(claim, exc)


@dataclass
class _Result:
    push: PushResult | None  # None: nothing at the IdP (deleted, or already gone)
    gone: bool = False
    adopted: bool = False
    note: str = ""


def _push(
    connector: BaseConnector, claim: _Claim, operation: str, client: Client, *, may_recreate: bool = True
) -> _Result:
    """``may_recreate=False``: an update that finds the client gone raises Unconfirmed instead of creating it
    again (an earlier, unanswered attempt may already have done so, at an IdP that cannot list)."""
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
            return _Result(push=None, gone=True, note="already gone")
        try:
            result = connector.disable(client_id, spec, state)
        except NotFound:
            return _Result(push=None, gone=True, note="gone at IdP")
        return _Result(push=result, gone=result.deleted)

    if operation == OutboxOperation.DELETE:
        if not client_id:
            return _delete_by_marker(connector, spec.registrar_id)
        if state.get("deleted"):
            return _Result(push=None, gone=True, note="already gone")
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


# -- many clients at once (the workers' bulk path) ---------------------------------------------------------


def deliver_outbox_batch(
    client_ids: list[int],
    *,
    timeout: float | None = None,
    connectors: ConnectorCache | None = None,
    budget_seconds: float | None = None,
) -> dict[str, int]:
    """Deliver the due outbox heads of many clients; what ``requeue_outbox`` hands to workers.

    Heads are leased in chunks (one UPDATE per ``CLAIM_CHUNK``) and each is pushed exactly as
    :func:`deliver_client_outbox` would, if its lease still has room for the call (:func:`_lease_has_room`),
    with up to ``REGISTRAR_OUTBOX_PARALLEL_CALLS`` calls in flight on a thread pool (:class:`_CallPool`);
    this thread records every outcome, in order. The common case — a CREATE that succeeded for a client
    still in ``provisioning`` — is recorded for many clients in one transaction (IdP fields in one UPDATE, entries in one UPDATE, one
    set-based activation with one chained audit insert) instead of one transaction each. Results are
    flushed before their leases could run out. Anything else is recorded by the single-entry path, and
    clients with more entries queued behind the head are finished with :func:`deliver_client_outbox`.
    Stops claiming after ``budget_seconds`` (default: half the soft time limit); the rest waits for the
    next requeue.
    """
    worker = worker_name()
    cache = connectors if connectors is not None else ConnectorCache()
    budget = budget_seconds if budget_seconds is not None else _setting("CELERY_TASK_SOFT_TIME_LIMIT", 60) / 2
    flush_after = lease_seconds() / 3
    chunk_size = CLAIM_CHUNK
    pool = _CallPool(parallel_calls())
    started = time.monotonic()
    counts = {"delivered": 0, "other": 0, "skipped": 0}
    fast: list[tuple[_Claim, _Result]] = []
    fast_since = 0.0
    followups: list[int] = []
    in_flight: deque[tuple[_Claim, Future, float]] = deque()
    returned: list[_Claim] = []

    def record(claim: _Claim, future: Future, claimed_at: float) -> None:
        nonlocal fast, fast_since
        answer = future.result()
        if answer is None:  # no room left in its lease: never started
            returned.append(claim)
            return
        attempt = _record_failure(claim, answer) if isinstance(answer, BaseException) else answer
        if isinstance(attempt, _Result) and _is_plain_create(claim, attempt):
            if not fast:
                fast_since = claimed_at
            fast.append((claim, attempt))
        else:
            outcome = attempt if isinstance(attempt, Outcome) else _succeed(claim, attempt)
            counts["delivered" if outcome == Outcome.DELIVERED else "other"] += 1
            if outcome != Outcome.RETRY and not claim.last:
                followups.append(claim.entry.client_id)
        if fast and (time.monotonic() - fast_since > flush_after or isinstance(attempt, Outcome)):
            counts["delivered"] += _succeed_many(fast, followups)
            fast = []

    try:
        heads = list(_due_heads(client_ids))
        for start in range(0, len(heads), chunk_size):
            if time.monotonic() - started > budget:
                counts["skipped"] += len(heads) - start  # the next requeue hands them out again
                break
            claimed_at = time.monotonic()
            chunk = heads[start : start + chunk_size]
            claims = _claim_entries(chunk, worker)
            counts["skipped"] += len(chunk) - len(claims)
            for claim in claims:
                if _supersede_if_ended(claim) is not None:
                    counts["other"] += 1
                    if not claim.last:
                        followups.append(claim.entry.client_id)  # its DELETE/DISABLE, queued behind
                    continue
                connector = _connector(claim, cache, timeout)
                if _journaled(connector):
                    # Journaled calls write to the database: they run here, one at a time, not on the pool.
                    future = Future()
                    future.set_result(_timed_call(claim, connector, timeout, journaled=True))
                else:
                    future = pool.submit(_timed_call, claim, connector, timeout)
                in_flight.append((claim, future, claimed_at))
            # Record the previous chunk's outcomes while this chunk's calls run: the pool never runs dry
            # between chunks (a claim, a flush) and at most two chunks are leased and unrecorded at a time.
            while len(in_flight) > len(claims):
                record(*in_flight.popleft())
        while in_flight:
            record(*in_flight.popleft())
        if returned:
            # A slow IdP ate the leases: those calls were never started; give them back.
            _unclaim(returned)
            counts["skipped"] += len(returned)
        if fast:
            counts["delivered"] += _succeed_many(fast, followups)
            fast = []
        for client_id in followups:
            deliver_client_outbox(client_id, timeout=timeout, connectors=cache)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # after a soft time limit: calls in flight are dropped
        if connectors is None:
            cache.close()
    return counts


# How many heads one UPDATE leases. Leasing costs a commit, so bigger chunks are cheaper; safety does not
# depend on the size (see _lease_has_room). The price of a big chunk: a worker killed mid-chunk leaves that
# many entries leased until REGISTRAR_OUTBOX_LEASE_SECONDS runs out, then requeue_outbox hands them out.
CLAIM_CHUNK = 25
#: Spare time, besides two full connector timeouts, that a lease must have left before an IdP call starts.
LEASE_MARGIN_SECONDS = 2.0


def _call_budget(timeout: float | None) -> float:
    """Longest one entry's delivery can take: a marker lookup and the call itself, each up to the timeout."""
    per_request = timeout or _setting("REGISTRAR_CONNECTOR_TIMEOUT_SECONDS", DEFAULT_CONNECTOR_TIMEOUT)
    return 2 * per_request + LEASE_MARGIN_SECONDS


def _lease_has_room(claim: _Claim, timeout: float | None) -> bool:
    """Whether the claim's lease outlasts the longest delivery that could start now.

    Entries leased together wait for each other's IdP calls; this check, made just before each call, is
    what keeps a slow IdP from letting a lease run out under a call in flight (another worker could then
    push the same entry). A lease shorter than the budget (a misconfiguration) still lets the first half of
    it be used, like the single-entry path.
    """
    left = (claim.entry.claimed_until - timezone.now()).total_seconds()
    return left >= min(_call_budget(timeout), lease_seconds() / 2)


def _unclaim(claims: list[_Claim]) -> None:
    """Give back leased entries that were never attempted (their attempt is not counted)."""
    ids = [claim.entry.pk for claim in claims]
    released = OutboxEntry.objects.filter(
        pk__in=ids, status=OutboxStatus.PENDING, claimed_by=claims[0].worker[:128]
    ).update(claimed_until=None, claimed_by="", attempts=F("attempts") - 1)
    log_event(
        "outbox_claims_returned", level=logging.WARNING, entries=len(ids), released=released, worker=claims[0].worker
    )


def parallel_calls() -> int:
    return max(1, int(_setting("REGISTRAR_OUTBOX_PARALLEL_CALLS", 4)))


def _timed_call(
    claim: _Claim, connector: BaseConnector | BaseException, timeout: float | None, *, journaled: bool = False
):
    """The IdP call if the claim's lease still has room for it, else None (run on the call pool, unless
    ``journaled``)."""
    if not _lease_has_room(claim, timeout):
        return None
    return _journaled_call(claim, connector) if journaled else _call(claim, connector)


def _without_database(fn, *args):
    """Run ``fn`` on a pool thread with database access refused: such a thread has no transaction of its own
    and must not open a connection. The submitting thread records every outcome."""
    from django.db import connection, connections

    try:
        with connection.execute_wrapper(_no_database):
            return fn(*args)
    finally:
        connections.close_all()  # the wrapper refuses the query, not the connect that precedes it


def _no_database(execute, sql, params, many, context):
    raise RuntimeError("an outbox IdP call touched the database; record outcomes in the calling thread")


class _CallPool:
    """Up to ``size`` IdP calls in flight per worker process, outcomes recorded in submission order.

    A worker that waits for the IdP one call at a time is capped at 1/latency deliveries per second; on a
    real network (tens of milliseconds per call) in-flight calls are what makes a worker fast. With size 1
    calls run inline, exactly as before.
    """

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="outbox-call") if size > 1 else None

    def submit(self, fn, *args) -> Future:
        if self._executor is not None:
            # With the caller's request and task ids, so the calls' log lines carry them. (Not a copy of the whole
            # context: Django's connections live in it, and a pool thread must not touch the caller's.)
            return self._executor.submit(logs.run_with_ids, logs.ids_snapshot(), _without_database, fn, *args)
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)


def _due_heads(client_ids: list[int]) -> Iterator[tuple[OutboxEntry, bool]]:
    """``(head entry, nothing queued behind it)`` for each client with a due, unleased head (two queries)."""
    now = timezone.now()
    rows = list(
        OutboxEntry.objects.filter(client_id__in=client_ids, status=OutboxStatus.PENDING)
        .select_related("client")
        .order_by("client_id", "id")
    )
    # Each IdP connection once per batch, not once per row: its secrets are decrypted on load (Fernet).
    idps = IdPConnection.objects.in_bulk({row.idp_id for row in rows})
    by_client: dict[int, list[OutboxEntry]] = {}
    for row in rows:
        row.idp = idps[row.idp_id]
        by_client.setdefault(row.client_id, []).append(row)
    for entries in by_client.values():
        head = entries[0]
        if head.next_attempt_at > now or (head.claimed_until is not None and head.claimed_until > now):
            continue
        yield head, len(entries) == 1


def _claim_entries(heads: list[tuple[OutboxEntry, bool]], worker: str) -> list[_Claim]:
    """Lease several heads with one conditional UPDATE; the ones this worker won, in order."""
    if not heads:
        return []
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease_seconds())
    ids = [entry.pk for entry, _ in heads]
    # Compare-and-set on each row's attempts as read: a row another worker touched since is left alone
    # (the heads may have been read a little while ago, earlier in the batch). Raw SQL because the ORM
    # spends longer composing the per-row conditions than the database spends running them.
    connection = transaction.get_connection()
    table = connection.ops.quote_name(OutboxEntry._meta.db_table)
    pairs = ", ".join(["(%s, %s)"] * len(heads))
    params: list[Any] = [lease_until, worker[:128], OutboxStatus.PENDING, now, now]
    for entry, _ in heads:
        params += [entry.pk, entry.attempts]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET claimed_until = %s, claimed_by = %s, attempts = attempts + 1 "  # noqa: S608
            f"WHERE status = %s AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until <= %s) "
            f"AND (id, attempts) IN (VALUES {pairs})",  # only the table name and placeholders are interpolated
            params,
        )
        won = cursor.rowcount
    if won == len(ids):
        winners = set(ids)
    elif won == 0:
        winners = set()
    else:
        winners = set(OutboxEntry.objects.filter(pk__in=ids, claimed_by=worker[:128]).values_list("pk", flat=True))
    claims = []
    for entry, last in heads:
        if entry.pk not in winners:
            continue
        previous_attempts, previous_holder = entry.attempts, entry.claimed_by
        entry.claimed_until, entry.claimed_by, entry.attempts = lease_until, worker[:128], previous_attempts + 1
        if previous_holder:
            log_event("outbox_lease_taken_over", entry_id=entry.pk, previous=previous_holder, worker=worker)
        claims.append(_Claim(entry=entry, worker=worker, maybe_reached_idp=previous_attempts > 0, last=last))
    return claims


def _is_plain_create(claim: _Claim, result: _Result) -> bool:
    client = claim.entry.client
    return (
        claim.entry.operation == OutboxOperation.CREATE
        and result.push is not None
        and not result.adopted
        and not result.push.deleted
        and client.state == ClientState.PROVISIONING
        and not client.idp_client_id
        and not client.sync_failed
    )


def _succeed_many(batch: list[tuple[_Claim, _Result]], followups: list[int]) -> int:
    """Record many successful creates in one transaction; anything unusual goes through :func:`_succeed`."""
    now = timezone.now()
    odd: list[tuple[_Claim, _Result]] = []
    with transaction.atomic():
        by_id = {claim.entry.client_id: (claim, result) for claim, result in batch}
        fields = tuple(getattr(lifecycle, "TRANSITION_FIELDS", ())) or None
        query = Client.objects.select_for_update().filter(pk__in=list(by_id)).order_by("pk")
        if fields:
            query = query.only(*fields, "idp_client_id", "sync_failed")
        locked = list(query)
        ready: list[Client] = []
        for client in locked:
            claim, result = by_id[client.pk]
            if client.state != ClientState.PROVISIONING or client.idp_client_id or client.sync_failed:
                odd.append((claim, result))  # changed while we called the IdP
                continue
            client.idp_client_id = result.push.client_id
            client.idp_state = dict(result.push.remote_state)
            client.last_synced_at = now
            ready.append(client)
        if ready:
            _store_idp_fields(ready, now)
            entry_ids = [by_id[c.pk][0].entry.pk for c in ready]
            OutboxEntry.objects.filter(pk__in=entry_ids, status=OutboxStatus.PENDING).update(
                status=OutboxStatus.DONE, delivered_at=now, claimed_until=None, claimed_by="", last_error=""
            )
            transition_many = getattr(lifecycle, "clients_transition_many", None)
            if transition_many is not None:
                transition_many(
                    clients=ready,
                    target=ClientState.ACTIVE,
                    actor=OUTBOX_ACTOR,
                    reason="created at IdP",
                    now=now,
                    push_to_idp=False,
                    cascade=False,
                )
            else:
                for client in ready:
                    client_transition(
                        client=client,
                        target=ClientState.ACTIVE,
                        actor=OUTBOX_ACTOR,
                        reason="created at IdP",
                        push_to_idp=False,
                    )
    for claim, result in odd:
        _succeed(claim, result)
    for client in ready:
        claim = by_id[client.pk][0]
        if not claim.last:
            followups.append(client.pk)
        log_event(
            "outbox_delivered",
            entry_id=claim.entry.pk,
            client_id=client.pk,
            operation=claim.entry.operation,
            idp_client_id=client.idp_client_id,
        )
    return len(ready) + len(odd)


def _store_idp_fields(clients: list[Client], now: datetime) -> None:
    """Write each client's IdP id and (encrypted) registration state in one statement."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        Client.objects.bulk_update(clients, ["idp_client_id", "idp_state", "last_synced_at"])
        return
    # bulk_update builds a CASE per field and row, which costs more than the rest of the batch together.
    state_field = Client._meta.get_field("idp_state")
    values = ", ".join(["(%s::bigint, %s::varchar, %s::text)"] * len(clients))
    params: list[Any] = []
    for client in clients:
        params += [client.pk, client.idp_client_id, state_field.get_db_prep_save(client.idp_state, connection)]
    table = connection.ops.quote_name(Client._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS c SET idp_client_id = v.idp_client_id, idp_state = v.idp_state, "  # noqa: S608
            f"last_synced_at = %s FROM (VALUES {values}) AS v(id, idp_client_id, idp_state) WHERE c.id = v.id",
            [now, *params],
        )


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
    log_event(
        "outbox_" + outcome, entry_id=claim.entry.pk, client_id=claim.entry.client_id, operation=claim.entry.operation
    )
    return outcome


def _idp_fields(entry: OutboxEntry, client: Client, result: _Result) -> dict[str, Any]:
    """The client's IdP fields after ``result`` (its id, and the remote state to store encrypted); also set on
    ``client``. Applying them twice changes nothing, so a journaled answer and the success record agree."""
    fields: dict[str, Any] = {}
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
    return fields


@transaction.atomic
def _succeed(claim: _Claim, result: _Result) -> Outcome:
    entry = claim.entry
    # The client as read with the claim. Only delivery writes the idp_* fields and we hold the lease, so a
    # plain UPDATE (which also row-locks the client) is enough; the state change below re-locks and
    # re-checks the state through the lifecycle service.
    client = entry.client
    now = timezone.now()
    fields: dict[str, Any] = {"last_synced_at": now, **_idp_fields(entry, client, result)}

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
            client_transition(
                client=client,
                target=ClientState.ACTIVE,
                actor=OUTBOX_ACTOR,
                reason=f"created at IdP {entry.idp.name}",
                push_to_idp=False,
            )
        except lifecycle.IllegalTransition:
            client.refresh_from_db(fields=["state"])  # ended meantime; its DELETE/DISABLE is queued behind us
    if entry.operation != OutboxOperation.CREATE or result.adopted or client.state != ClientState.ACTIVE:
        audit_record(
            actor=OUTBOX_ACTOR,
            action=f"client.idp_{entry.operation}" + ("_adopted" if result.adopted else ""),
            object_type="client",
            object_id=client.registration_id,
            after={
                "idp": entry.idp.name,
                "idp_client_id": client.idp_client_id,
                "note": result.note,
                "attempts": entry.attempts,
            },
            policy_version=client.policy_version,
        )
    log_event(
        "outbox_delivered",
        entry_id=entry.pk,
        client_id=client.pk,
        operation=entry.operation,
        idp_client_id=client.idp_client_id,
        adopted=result.adopted or None,
        note=result.note or None,
    )
    return Outcome.DELIVERED


def _retry_or_die(claim: _Claim, exc: Transient) -> Outcome:
    attempts = claim.entry.attempts  # the claim already counted this attempt
    if attempts >= max_attempts():
        return _dead(claim, exc)
    delay = backoff_seconds(attempts, retry_after=exc.retry_after)
    _release(claim, next_attempt_at=timezone.now() + timedelta(seconds=delay), last_error=_error_text(exc))
    log_event(
        "outbox_retry_scheduled",
        level=logging.WARNING,
        entry_id=claim.entry.pk,
        client_id=claim.entry.client_id,
        operation=claim.entry.operation,
        attempts=attempts,
        delay_s=round(delay, 1),
        error=type(exc).__name__,
    )
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
        after={
            "entry": entry.pk,
            "operation": entry.operation,
            "idp": entry.idp.name,
            "attempts": entry.attempts,
            "error": _error_text(exc)[:500],
        },
        policy_version=client.policy_version,
    )
    log_event(
        "outbox_dead_lettered",
        level=logging.ERROR,
        entry_id=entry.pk,
        client_id=client.pk,
        operation=entry.operation,
        error=type(exc).__name__,
    )
    return Outcome.DEAD


def _error_text(exc: BaseException) -> str:
    # Connector errors are censored by the connector; anything else is reduced to its type and message.
    return f"{type(exc).__name__}: {exc}"[:4000]
