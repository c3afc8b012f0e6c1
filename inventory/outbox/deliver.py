"""Delivering one client's outbox queue, in order: what a worker's task, the inline 201 path and the batch
path's follow-ups call.

Each round leases the head of the queue (``leases.claim_head``), makes its IdP call (``push``, or ``journal``
for an IdP that cannot list) and records the outcome (``record``), until the queue is empty or an entry must
wait for a retry.
"""

from __future__ import annotations

import logging

from inventory.choices import ClientState
from inventory.models import Client
from inventory.outbox import journal, leases, push, record
from inventory.outbox.leases import Claim
from inventory.outbox.push import ConnectorCache, IdpResult
from inventory.outbox.record import DeliveryOutcome
from portal.logs import log_event

logger = logging.getLogger(__name__)


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
    worker = leases.worker_name()
    cache = connectors if connectors is not None else ConnectorCache()
    try:
        while True:
            claim, nothing_pending = leases.claim_head(client_id, worker)
            if claim is None:
                return nothing_pending
            outcome = _deliver_claimed(claim, cache, timeout, inline=inline)
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
    try:
        deliver_client_outbox(client_id, timeout=timeout, connectors=push.INLINE_CONNECTORS, inline=True)
    except Exception:  # the worker path will finish the job; the agent gets a 202
        log_event(logger, "inline_delivery_failed", level=logging.ERROR, client_id=client_id, exc_info=True)
        return False
    return Client.objects.filter(pk=client_id, state=ClientState.ACTIVE, idp_client_id__isnull=False).exists()


def _deliver_claimed(
    claim: Claim, connectors: ConnectorCache, timeout: float | None, *, inline: bool = False
) -> DeliveryOutcome:
    attempt = _attempt(claim, connectors, timeout, inline=inline)
    if isinstance(attempt, DeliveryOutcome):
        return attempt
    return record.record_delivered(claim, attempt)


def _attempt(
    claim: Claim, connectors: ConnectorCache, timeout: float | None, *, inline: bool = False
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
    else:
        answer = push.call_idp(claim, connector)
    return record.record_failure(claim, answer) if isinstance(answer, BaseException) else answer
