"""Leasing outbox entries: which are due, and the conditional UPDATEs that give each to exactly one worker.

Only the *head* of a client's queue (its lowest-id ``pending`` entry) is ever leased, so a DELETE queued behind
a CREATE waits for it; dead entries do not block the queue. A lease is one conditional UPDATE
(``claimed_until`` in the past or empty, ``attempts`` as read) that also counts the attempt: only one UPDATE can
win. A killed worker's leases run out (``REGISTRAR_OUTBOX_LEASE_SECONDS``) and ``requeue_outbox`` hands the
entries to another worker; :func:`lease_has_room` keeps a live worker from losing a lease under a call in flight.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from inventory.choices import OutboxStatus
from inventory.models import IdPConnection, OutboxEntry
from inventory.outbox.config import LEASE_MARGIN_SECONDS, connector_timeout, lease_seconds
from portal.logs import log_event

logger = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Claim:
    """An entry this worker holds the lease on (``entry.claimed_by == worker``)."""

    entry: OutboxEntry
    worker: str
    #: An earlier attempt may have reached the IdP (it timed out, or its worker died mid-call).
    maybe_reached_idp: bool
    #: Nothing else was queued for the client when this entry was claimed.
    last: bool = False


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


# -- one client's head ------------------------------------------------------------------------------------


def claim_head(client_id: int, worker: str) -> tuple[Claim | None, bool]:
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
        log_event(logger, "outbox_lease_taken_over", entry_id=entry.pk, previous=previous_holder, worker=worker)
    claim = Claim(entry=entry, worker=worker, maybe_reached_idp=previous_attempts > 0, last=len(heads) == 1)
    return claim, False


# -- many clients' heads (the batch path) -----------------------------------------------------------------


def due_heads(client_ids: list[int]) -> Iterator[tuple[OutboxEntry, bool]]:
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


def claim_heads(heads: list[tuple[OutboxEntry, bool]], worker: str) -> list[Claim]:
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
            log_event(logger, "outbox_lease_taken_over", entry_id=entry.pk, previous=previous_holder, worker=worker)
        claims.append(Claim(entry=entry, worker=worker, maybe_reached_idp=previous_attempts > 0, last=last))
    return claims


def call_budget(timeout: float | None) -> float:
    """Longest one entry's delivery can take: a marker lookup and the call itself, each up to the timeout."""
    return 2 * connector_timeout(timeout) + LEASE_MARGIN_SECONDS


def lease_has_room(claim: Claim, timeout: float | None) -> bool:
    """Whether the claim's lease outlasts the longest delivery that could start now.

    Entries leased together wait for each other's IdP calls; this check, made just before each call, is
    what keeps a slow IdP from letting a lease run out under a call in flight (another worker could then
    push the same entry). A lease shorter than the budget (a misconfiguration) still lets the first half of
    it be used, like the single-entry path.
    """
    until = claim.entry.claimed_until
    assert until is not None  # a claim holds a lease
    left = (until - timezone.now()).total_seconds()
    return left >= min(call_budget(timeout), lease_seconds() / 2)


# -- giving leases back -----------------------------------------------------------------------------------


def release(claim: Claim, **fields: Any) -> bool:
    """End the lease, writing ``fields`` on the entry; False (and a warning) if this worker no longer held it."""
    updated = OutboxEntry.objects.filter(
        pk=claim.entry.pk, status=OutboxStatus.PENDING, claimed_by=claim.worker[:128]
    ).update(claimed_until=None, claimed_by="", **fields)
    if not updated:
        log_event(logger, "outbox_lease_lost", level=logging.WARNING, entry_id=claim.entry.pk, worker=claim.worker)
    return bool(updated)


def unclaim(claims: list[Claim]) -> None:
    """Give back leased entries that were never attempted (their attempt is not counted)."""
    ids = [claim.entry.pk for claim in claims]
    released = OutboxEntry.objects.filter(
        pk__in=ids, status=OutboxStatus.PENDING, claimed_by=claims[0].worker[:128]
    ).update(claimed_until=None, claimed_by="", attempts=F("attempts") - 1)
    log_event(
        logger,
        "outbox_claims_returned",
        level=logging.WARNING,
        entries=len(ids),
        released=released,
        worker=claims[0].worker,
    )
