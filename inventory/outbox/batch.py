"""Delivering the due heads of many clients at once: what ``requeue_outbox`` hands to workers.

:class:`OutboxBatch` holds one run's state. Heads are leased in chunks (one UPDATE per ``CLAIM_CHUNK``) and each
is pushed exactly as ``deliver.deliver_client_outbox`` would, if its lease still has room for the call
(``leases.lease_has_room``), with up to ``REGISTRAR_OUTBOX_PARALLEL_CALLS`` calls in flight on a thread pool
(:class:`CallPool`); the calling thread records every outcome, in order. Plain creates are recorded many at a
time (``record.record_created_many``), flushed before their leases could run out; anything else is recorded by
the single-entry path, and clients with more entries queued behind the head are finished with
``deliver.deliver_client_outbox``.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from inventory.connectors.base import BaseConnector
from inventory.outbox import config, record
from inventory.outbox.config import lease_seconds, parallel_calls, setting
from inventory.outbox.deliver import deliver_client_outbox
from inventory.outbox.journal import is_journaled, journaled_call
from inventory.outbox.leases import Claim, claim_heads, due_heads, lease_has_room, unclaim, worker_name
from inventory.outbox.push import ConnectorCache, IdpResult, call_idp, entry_connector
from inventory.outbox.record import DeliveryOutcome, is_plain_create, record_failure, supersede_if_ended
from portal import logs


def deliver_outbox_batch(
    client_ids: list[int],
    *,
    timeout: float | None = None,
    connectors: ConnectorCache | None = None,
    budget_seconds: float | None = None,
) -> dict[str, int]:
    """Deliver the due outbox heads of many clients; counts of ``delivered``, ``other`` outcomes and ``skipped``.

    Stops claiming after ``budget_seconds`` (default: half the soft time limit); the rest waits for the next
    requeue. ``connectors`` as for ``deliver.deliver_client_outbox``.
    """
    cache = connectors if connectors is not None else ConnectorCache()
    budget = budget_seconds if budget_seconds is not None else setting("CELERY_TASK_SOFT_TIME_LIMIT", 60) / 2
    try:
        return OutboxBatch(connectors=cache, timeout=timeout, budget_seconds=budget).run(client_ids)
    finally:
        if connectors is None:
            cache.close()


class OutboxBatch:
    """One run of :func:`deliver_outbox_batch`: leases taken, calls in flight, outcomes still to record."""

    def __init__(self, *, connectors: ConnectorCache, timeout: float | None, budget_seconds: float) -> None:
        self.worker = worker_name()
        self.connectors = connectors
        self.timeout = timeout
        self.budget_seconds = budget_seconds
        #: Plain creates are flushed once the oldest has waited this long, well inside its lease.
        self.flush_after = lease_seconds() / 3
        self.counts = {"delivered": 0, "other": 0, "skipped": 0}
        #: Calls started (or finished, for journaled ones), in claim order, with when their chunk was leased.
        self.in_flight: deque[tuple[Claim, Future, float]] = deque()
        #: Plain creates waiting for one bulk record, and when the oldest of them was leased.
        self.created: list[tuple[Claim, IdpResult]] = []
        self.created_since = 0.0
        #: Leases whose call never started (no room left); given back at the end.
        self.never_started: list[Claim] = []
        #: Clients with entries queued behind the one delivered here; finished one by one at the end.
        self.followups: list[int] = []

    def run(self, client_ids: list[int]) -> dict[str, int]:
        pool = CallPool(parallel_calls())
        started = time.monotonic()
        try:
            heads = list(due_heads(client_ids))
            for start in range(0, len(heads), config.CLAIM_CHUNK):
                if time.monotonic() - started > self.budget_seconds:
                    self.counts["skipped"] += len(heads) - start  # the next requeue hands them out again
                    break
                claimed_at = time.monotonic()
                chunk = heads[start : start + config.CLAIM_CHUNK]
                claims = claim_heads(chunk, self.worker)
                self.counts["skipped"] += len(chunk) - len(claims)
                for claim in claims:
                    self._start(claim, claimed_at, pool)
                # Record the previous chunk's outcomes while this chunk's calls run: the pool never runs dry
                # between chunks (a claim, a flush) and at most two chunks are leased and unrecorded at a time.
                while len(self.in_flight) > len(claims):
                    self._record(*self.in_flight.popleft())
            while self.in_flight:
                self._record(*self.in_flight.popleft())
            if self.never_started:
                # A slow IdP ate the leases: those calls were never started; give them back.
                unclaim(self.never_started)
                self.counts["skipped"] += len(self.never_started)
            self._flush_created()
            for client_id in self.followups:
                deliver_client_outbox(client_id, timeout=self.timeout, connectors=self.connectors)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # after a soft time limit: calls in flight are dropped
        return self.counts

    def _start(self, claim: Claim, claimed_at: float, pool: CallPool) -> None:
        if supersede_if_ended(claim) is not None:
            self.counts["other"] += 1
            if not claim.last:
                self.followups.append(claim.entry.client_id)  # its DELETE/DISABLE, queued behind
            return
        connector = entry_connector(claim, self.connectors, self.timeout)
        if is_journaled(connector):
            # Journaled calls write to the database: they run here, one at a time, not on the pool.
            future: Future = Future()
            future.set_result(timed_call(claim, connector, self.timeout, journaled=True))
        else:
            future = pool.submit(timed_call, claim, connector, self.timeout)
        self.in_flight.append((claim, future, claimed_at))

    def _record(self, claim: Claim, future: Future, claimed_at: float) -> None:
        answer = future.result()
        if answer is None:  # no room left in its lease: never started
            self.never_started.append(claim)
            return
        attempt = record_failure(claim, answer) if isinstance(answer, BaseException) else answer
        if isinstance(attempt, IdpResult) and is_plain_create(claim, attempt):
            if not self.created:
                self.created_since = claimed_at
            self.created.append((claim, attempt))
        else:
            outcome = attempt if isinstance(attempt, DeliveryOutcome) else record.record_delivered(claim, attempt)
            self.counts["delivered" if outcome == DeliveryOutcome.DELIVERED else "other"] += 1
            if outcome != DeliveryOutcome.RETRY and not claim.last:
                self.followups.append(claim.entry.client_id)
        if self.created and (
            time.monotonic() - self.created_since > self.flush_after or isinstance(attempt, DeliveryOutcome)
        ):
            self._flush_created()

    def _flush_created(self) -> None:
        if not self.created:
            return
        recorded, followups = record.record_created_many(self.created)
        self.counts["delivered"] += recorded
        self.followups += followups
        self.created = []


# -- calls on a thread pool ---------------------------------------------------------------------------------


def timed_call(
    claim: Claim, connector: BaseConnector | BaseException, timeout: float | None, *, journaled: bool = False
):
    """The IdP call if the claim's lease still has room for it, else None (run on the call pool, unless
    ``journaled``)."""
    if not lease_has_room(claim, timeout):
        return None
    if journaled and isinstance(connector, BaseConnector):
        return journaled_call(claim, connector)
    return call_idp(claim, connector)


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


class CallPool:
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
