"""Delivering one client's outbox queue, in order: what a worker's task, the inline 201 path and the batch
path's follow-ups call.

Each round leases the head of the queue (``leases.claim_head``), makes its IdP call (``push``, or ``journal``
for an IdP that cannot list) and records the outcome (``record``), until the queue is empty or an entry must
wait for a retry.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from inventory.choices import ClientState
from inventory.models import Client
from inventory.outbox import journal, leases, push, record
from inventory.outbox.leases import Claim
from inventory.outbox.push import ConnectorCache, IdpResult
from inventory.outbox.record import DeliveryOutcome
from portal.circuit import Bulkhead, Circuit, Deadline, within
from portal.logs import log_event
from portal.unavailable import is_database_unavailable

logger = logging.getLogger(__name__)

# The 201 path's adaptive wait (portal.circuit), per web process. A circuit per IdP: when an IdP's recent inline
# calls are slower than the budget (an EWMA above it) or a share of the last few failed, registrations for it
# answer 202 at once for a while, then one request probes it. At most INLINE_MAX_WAITERS requests of a process
# wait inline at a time (a threaded server's bulkhead; a sync gunicorn worker holds one request anyway). All are
# settings: REGISTRAR_INLINE_* (docs/operations.md).
INLINE_MAX_WAITERS = settings.REGISTRAR_INLINE_MAX_WAITERS
INLINE_CIRCUIT = Circuit(
    budget=float(settings.REGISTRAR_INLINE_DELIVERY_TIMEOUT),
    alpha=settings.REGISTRAR_INLINE_CIRCUIT_EWMA_ALPHA,
    window=settings.REGISTRAR_INLINE_CIRCUIT_WINDOW,
    failure_ratio=settings.REGISTRAR_INLINE_CIRCUIT_FAILURE_RATIO,
    min_samples=settings.REGISTRAR_INLINE_CIRCUIT_MIN_SAMPLES,
    open_seconds=settings.REGISTRAR_INLINE_CIRCUIT_OPEN_SECONDS,
)
INLINE_BULKHEAD = Bulkhead(INLINE_MAX_WAITERS)


def deliver_client_outbox(
    client_id: int,
    *,
    timeout: float | None = None,
    connectors: ConnectorCache | None = None,
    inline: bool = False,
    deadline: Deadline | None = None,
) -> bool:
    """Deliver one client's due outbox entries in id order.

    Returns True when nothing is left pending for the client (everything delivered, superseded or
    dead-lettered), False when an entry waits for a retry or another worker holds it. ``connectors`` is a
    per-process cache (workers pass one, so connections and TLS contexts are reused across tasks);
    without it connectors are built for this call and closed after. ``inline`` (the 201 path) leaves an
    IdP that cannot list to a worker: see :func:`deliver_client_outbox_inline`. ``deadline`` (inline only) is
    the request's total budget: no entry is claimed once it has passed, each IdP is asked only while its
    circuit allows (:data:`INLINE_CIRCUIT`), and every IdP request gets what is left of it.
    """
    worker = leases.worker_name()
    cache = connectors if connectors is not None else ConnectorCache()
    try:
        while True:
            if deadline is not None and deadline.expired:
                return False
            claim, nothing_pending = leases.claim_head(client_id, worker)
            if claim is None:
                return nothing_pending
            ticket = None
            if deadline is not None:
                ticket = INLINE_CIRCUIT.acquire(claim.entry.idp_id)
                if ticket is None:  # the IdP is slow or failing: answer 202 now, a worker delivers
                    leases.unclaim([claim])
                    return False
            try:
                outcome = _deliver_claimed(claim, cache, timeout, inline=inline, ticket=ticket, deadline=deadline)
            finally:
                INLINE_CIRCUIT.release(claim.entry.idp_id, ticket)  # a probe that made no IdP call
            if outcome == DeliveryOutcome.RETRY:
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
    only a person can sort out (``inventory.outbox.journal``), so a worker creates it with the full timeout.
    Must be called after the transaction that wrote the outbox entry has committed.
    """
    if not INLINE_BULKHEAD.try_enter():  # K requests of this process already wait: answer 202 now
        return False
    try:
        deliver_client_outbox(
            client_id,
            timeout=timeout,
            connectors=push.INLINE_CONNECTORS,
            inline=True,
            deadline=Deadline(timeout),
        )
        # read inside the try: the database can go away between the delivery and this question, too
        return Client.objects.filter(pk=client_id, state=ClientState.ACTIVE, idp_client_id__isnull=False).exists()
    except Exception as exc:  # the worker path will finish the job; the agent gets a 202
        if is_database_unavailable(exc):
            # The database went away mid-delivery: the entry is committed and a worker delivers it once the
            # database is back. portal.unavailable logs the outage once; no stack trace per registration.
            log_event(
                logger,
                "inline_delivery_deferred",
                level=logging.WARNING,
                client_id=client_id,
                reason="database_unavailable",
            )
            return False
        log_event(logger, "inline_delivery_failed", level=logging.ERROR, client_id=client_id, exc_info=True)
        return False
    finally:
        INLINE_BULKHEAD.leave()


def _deliver_claimed(
    claim: Claim,
    connectors: ConnectorCache,
    timeout: float | None,
    *,
    inline: bool = False,
    ticket: str | None = None,
    deadline: Deadline | None = None,
) -> DeliveryOutcome:
    attempt = _attempt(claim, connectors, timeout, inline=inline, ticket=ticket, deadline=deadline)
    if isinstance(attempt, DeliveryOutcome):
        return attempt
    return record.record_delivered(claim, attempt)


def _attempt(
    claim: Claim,
    connectors: ConnectorCache,
    timeout: float | None,
    *,
    inline: bool = False,
    ticket: str | None = None,
    deadline: Deadline | None = None,
) -> IdpResult | DeliveryOutcome:
    """Call the IdP for a claimed entry. A result to record, or the outcome already recorded."""
    superseded = record.supersede_if_ended(claim)
    if superseded is not None:
        return superseded
    connector = push.entry_connector(claim, connectors, timeout)
    if journal.is_journaled(connector):
        if inline:
            # Not attempted here: a worker creates it with the full connector timeout (the intake nudges one
            # when the inline delivery did not finish).
            leases.unclaim([claim])
            return DeliveryOutcome.RETRY
        answer = journal.journaled_call(claim, connector)
    elif deadline is not None:
        answer = _timed_call(claim, connector, deadline, ticket)
    else:
        answer = push.call_idp(claim, connector)
    return record.record_failure(claim, answer) if isinstance(answer, BaseException) else answer


def _timed_call(claim: Claim, connector, deadline: Deadline, ticket: str | None) -> IdpResult | BaseException:
    """The inline IdP call: within what is left of the request's budget, its latency and outcome fed to the
    IdP's circuit (a half-open probe's outcome closes or reopens it)."""
    started = time.monotonic()
    with within(deadline):
        answer = push.call_idp(claim, connector)
    INLINE_CIRCUIT.record(
        claim.entry.idp_id,
        seconds=time.monotonic() - started,
        ok=not isinstance(answer, BaseException),
        ticket=ticket,
        budget=deadline.seconds,
    )
    return answer
