"""The cap on an owner's live clients, decided inside the transaction that makes a client live for them.

An owner's live clients (``LIVE_STATES``: provisioning, active, suspended) may not exceed the active policy's
``max_live_clients_per_owner``. Every path that makes a client live for an owner calls :func:`owner_quota_hold`
in its own transaction before it writes anything:

- an approved registration (``approvals.services.request_client_create``): policy auto-approval at intake,
  the last human approval of a pending request, and spawned children, which belong to their parent's owner;
- a change of owner (``inventory.lifecycle``): a transfer offer accepted, an orphan taken over.

How: the owner's user row is locked, then the live clients are counted by a *second* statement. Under READ
COMMITTED that statement's snapshot is taken after the lock was granted, so it sees every client committed by
the transactions that held the lock before; a count read earlier in the request, or in the statement that
waits for the lock, would not (that is how 32 concurrent registrations used to leave 51 live clients). The
lock is ``FOR NO KEY UPDATE``: it queues transactions for the same owner until they commit, but does not block
the foreign-key checks of rows that merely reference the owner. Two different owners never wait for each
other. On SQLite every write transaction begins ``IMMEDIATE`` (portal.settings), so writers are serialised
already and the count alone is enough.

Why a lock and a count rather than a per-owner counter row (``UPDATE … SET live = live + 1 WHERE live < limit``):
the count reads the clients themselves, so it cannot drift. A counter would have to follow every move in or out
of a live state — single transitions, set-based sweeps, break glass, cascades to descendants, transfers — and
any one path that forgot it would silently let an owner through or lock them out. The count is an index-only
range over ``client_owner_state_idx`` of at most ``limit`` rows (bench/RESULTS.md has its cost per registration).

Lock order: the owner row comes before the audit chain head (:mod:`portal.audit`) — call this before the
transaction's first audit append.

The limit belongs to the approvals app's policy; it registers where to read it at start-up
(``inventory.hooks.register_owner_live_limit``), since inventory does not import approvals.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.db import transaction

from inventory.choices import LIVE_STATES
from inventory.hooks import owner_live_limit
from inventory.lifecycle.errors import LifecycleError
from inventory.models import Client
from portal.logs import log_event

logger = logging.getLogger(__name__)

QUOTA_SETTING = "max_live_clients_per_owner"


class OwnerQuotaExceeded(LifecycleError):
    """The owner already holds as many live clients as the policy allows. Nothing was written."""

    code = "owner_over_quota"

    def __init__(self, *, owner_id: int, live: int, limit: int, adding: int = 1, subject: str = "the owner") -> None:
        self.owner_id, self.live, self.limit, self.adding = owner_id, live, limit, adding
        super().__init__(self.describe(subject))

    def describe(self, subject: str) -> str:
        """``"<subject> already has 50 live clients; the limit is 50 (max_live_clients_per_owner)"``."""
        has = "have" if subject == "you" else "has"
        return f"{subject} already {has} {self.live} live clients; the limit is {self.limit} ({QUOTA_SETTING})"


_statements: dict[str, tuple[str | None, str]] = {}


def _sql(connection) -> tuple[str | None, str]:
    """(lock statement or None, count statement) for ``connection``, built once per database alias."""
    cached = _statements.get(connection.alias)
    if cached is None:
        qn = connection.ops.quote_name
        user = get_user_model()
        lock = None
        if connection.features.has_select_for_update:
            mode = "FOR NO KEY UPDATE" if connection.features.has_select_for_no_key_update else "FOR UPDATE"
            lock = (
                f"SELECT 1 FROM {qn(user._meta.db_table)} "  # noqa: S608 - identifiers from _meta
                f"WHERE {qn(user._meta.pk.column)} = %s {mode}"
            )
        owner = qn(Client._meta.get_field("owner").column)
        state = qn(Client._meta.get_field("state").column)
        live = ", ".join(f"'{s}'" for s in sorted(LIVE_STATES))  # constants, not input
        count = f"SELECT COUNT(*) FROM {qn(Client._meta.db_table)} WHERE {owner} = %s AND {state} IN ({live})"  # noqa: S608
        cached = _statements[connection.alias] = (lock, count)
    return cached


def owner_quota_hold(
    *, owner_id: int | None, adding: int = 1, limit: int | None = None, subject: str = "the owner"
) -> int | None:
    """Lock the owner and check there is room for ``adding`` more live clients; return their live count now.

    Must run inside the transaction that then makes the clients live (the lock is held until it ends).
    ``limit`` defaults to the registered policy's; raises :class:`OwnerQuotaExceeded`, whose message names
    ``subject`` ("the owner", "you"). Returns None (and locks nothing) when there is no owner or no limit.
    """
    if owner_id is None:
        return None
    if limit is None:
        limit = owner_live_limit()
        if limit is None:
            return None
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("owner_quota_hold must run inside the transaction that makes the clients live")
    lock, count = _sql(connection)
    with connection.cursor() as cursor:
        if lock is not None:
            cursor.execute(lock, [owner_id])
        cursor.execute(count, [owner_id])
        live = int(cursor.fetchone()[0])
    if live + adding > limit:
        log_event(logger, "owner_quota_refused", owner_id=owner_id, live=live, limit=limit, adding=adding)
        raise OwnerQuotaExceeded(owner_id=owner_id, live=live, limit=limit, adding=adding, subject=subject)
    return live


__all__ = ["OwnerQuotaExceeded", "owner_quota_hold"]
