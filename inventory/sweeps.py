"""Sweeps: expiry, owners who left (co-sponsor succession, orphans); and the registry of sweeps other apps own (lapsed requests).

Every sweep is set-based and batched: it selects due rows over an indexed column with
``SELECT … FOR UPDATE SKIP LOCKED LIMIT <REGISTRAR_SWEEP_BATCH_SIZE>``, changes them with the same
lifecycle rules a person's action follows (``inventory.lifecycle.clients_transition_many``: one audit
event and one outbox row per client) and commits per batch. Two workers running the same sweep never
see each other's locked rows, and a committed row no longer matches the filter, so each due client is
transitioned exactly once. A keyset cursor on the primary key guarantees termination even when a
batch cannot change some of its rows.

All sweeps take ``now=`` so tests (and the benchmark) can move time without sleeping. "Unused" clients are the
lifecycle policies' inactivity rule (``inventory.lifecycle_policies``), which also keeps ``Client.stale_at``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from inventory import hooks
from inventory.choices import ENDED_STATES, LIVE_STATES, ClientState
from inventory.lifecycle import TRANSITION_FIELDS, client_snapshot, clients_transition_many
from inventory.models import Client
from portal.audit import Actor, audit_record_many
from portal.logs import log_event

logger = logging.getLogger(__name__)


def _log_sweep(result: SweepResult) -> None:
    """One line per sweep run: its counts, not the ids it changed (those are in the audit events)."""
    fields: dict[str, Any] = {"sweep": result.name, "batches": result.batches, **result.counts}
    log_event(logger, "sweep", **fields)


@dataclass
class SweepResult:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    client_ids: dict[str, list[int]] = field(default_factory=dict)

    def add(self, key: str, ids: list[int]) -> None:
        self.counts[key] = self.counts.get(key, 0) + len(ids)
        self.client_ids.setdefault(key, []).extend(ids)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        parts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items())) or "nothing=0"
        return f"sweep={self.name} {parts} batches={self.batches}"


def _batch_size(batch_size: int | None) -> int:
    return batch_size or settings.REGISTRAR_SWEEP_BATCH_SIZE


def _in_batches(
    queryset: QuerySet,
    handle: Callable[[list[Client]], list[int]],
    *,
    batch_size: int,
    result: SweepResult,
    key: str,
    limit: int | None = None,
) -> None:
    """Lock up to ``batch_size`` matching rows (skipping locked ones), handle them, commit; repeat."""
    last_pk = 0
    done = 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        with transaction.atomic():
            batch = list(
                queryset.filter(pk__gt=last_pk)
                .only(*TRANSITION_FIELDS)
                .order_by("pk")
                .select_for_update(skip_locked=True, of=("self",))[:size]
            )
            if not batch:
                return
            changed = handle(batch)
        last_pk = batch[-1].pk
        done += len(batch)
        result.batches += 1
        result.add(key, changed)


def _transition(target: str, actor: Actor, reason: str, action: str, now: dt.datetime, result: SweepResult):
    def handle(batch: list[Client]) -> list[int]:
        transitions = clients_transition_many(
            clients=batch, target=target, actor=actor, reason=reason, action=action, now=now
        )
        if transitions.cascaded:
            result.add("cascaded", transitions.cascaded)
        return transitions.transitioned

    return handle


# --- expiry --------------------------------------------------------------------------------------


def sweep_expired(
    *,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    actor: Actor | None = None,
) -> SweepResult:
    """Live clients past ``expires_at`` become expired (IdP disable queued); then end orphaned lineages.

    Suspended clients expire too (they are already disabled; expiring them ends them for good).
    The overshoot is recorded when the IdP confirms the disable (``client_record_idp_disabled``).
    """
    now = now or timezone.now()
    actor = actor or Actor.system("sweep_expired")
    size = _batch_size(batch_size)
    result = SweepResult("expired")
    due = Client.objects.filter(state__in=[ClientState.ACTIVE, ClientState.SUSPENDED], expires_at__lte=now)
    _in_batches(
        due,
        _transition(ClientState.EXPIRED, actor, "expires_at passed", "client.expired", now, result),
        batch_size=size,
        result=result,
        key="expired",
        limit=limit,
    )
    # Lineage pass: a live child of an ended parent (its cascade was skipped because another
    # transaction held the child's lock) is retired here, on the next run at the latest.
    # ``parent__isnull=False`` is implied by the join, but said here it lets PostgreSQL start from the parent
    # index (the few spawned clients) instead of walking every client in key order (a minute at 10M).
    stranded = Client.objects.filter(state__in=LIVE_STATES, parent__isnull=False, parent__state__in=ENDED_STATES)
    _in_batches(
        stranded,
        _transition(ClientState.RETIRED, actor, "parent ended", "client.retired.cascade", now, result),
        batch_size=size,
        result=result,
        key="lineage",
    )
    _log_sweep(result)
    return result


# --- orphans -------------------------------------------------------------------------------------


def _orphan_grace() -> dt.timedelta:
    return dt.timedelta(hours=settings.REGISTRAR_ORPHAN_GRACE_HOURS)


def _orphan_retire_after() -> dt.timedelta:
    # The second period starts when the grace period ends (i.e. when the client was suspended).
    return _orphan_grace() + dt.timedelta(days=settings.REGISTRAR_ORPHAN_RETIRE_DAYS)


def _flag(field_name: str, action: str, actor: Actor, reason: str, now: dt.datetime, before: Callable):
    def handle(batch: list[Client]) -> list[int]:
        ids = [c.pk for c in batch]
        Client.objects.filter(pk__in=ids).update(**{field_name: now})
        audit_record_many(
            [
                {
                    "actor": actor,
                    "action": action,
                    "object_type": "client",
                    "object_id": c.registration_id,
                    "before": before(c),
                    "after": {field_name: now},
                    "reason": reason,
                    "policy_version": c.policy_version,
                }
                for c in batch
            ]
        )
        return ids

    return handle


def _owner_gone() -> Q:
    return Q(owner__isnull=True) | Q(owner__is_active=False)


def sweep_orphans(
    *, now: dt.datetime | None = None, batch_size: int | None = None, actor: Actor | None = None, notify: bool = True
) -> SweepResult:
    """Owner gone → a co-sponsor succeeds them; no sponsor left → orphaned (team and manager notified) →
    suspended after the grace → retired later."""
    now = now or timezone.now()
    actor = actor or Actor.system("sweep_orphans")
    size = _batch_size(batch_size)
    result = SweepResult("orphans")
    from inventory.lifecycle_policies.succession import has_successor, succeed_owners

    # First: a live client whose owner left and which still has an active co-sponsor passes to that sponsor
    # (orphaned ones too: an orphan flag set before a sponsor accepted is cleared). Only the rest orphan.
    _in_batches(
        Client.objects.filter(managed=True, state__in=LIVE_STATES).filter(_owner_gone()).filter(has_successor()),
        lambda batch: succeed_owners(batch, actor=actor, now=now),
        batch_size=size,
        result=result,
        key="succeeded",
    )
    newly = Client.objects.filter(managed=True, state__in=LIVE_STATES, orphaned_at__isnull=True).filter(_owner_gone())
    _in_batches(
        newly,
        _flag("orphaned_at", "client.orphaned", actor, "owner deactivated", now, lambda c: client_snapshot(c)),
        batch_size=size,
        result=result,
        key="orphaned",
    )
    to_suspend = Client.objects.filter(state=ClientState.ACTIVE, orphaned_at__lte=now - _orphan_grace())
    _in_batches(
        to_suspend,
        _transition(ClientState.SUSPENDED, actor, "orphaned: grace period over", "client.suspend.orphan", now, result),
        batch_size=size,
        result=result,
        key="suspended",
    )
    to_retire = Client.objects.filter(state__in=LIVE_STATES, orphaned_at__lte=now - _orphan_retire_after())
    _in_batches(
        to_retire,
        _transition(ClientState.RETIRED, actor, "orphaned: nobody took it over", "client.retire.orphan", now, result),
        batch_size=size,
        result=result,
        key="retired",
    )
    if notify and result.client_ids.get("orphaned"):
        from inventory.notifications import notify_orphans

        notify_orphans(client_ids=result.client_ids["orphaned"], now=now)
    if notify and result.client_ids.get("succeeded"):
        from inventory.notifications import notify_successors

        notify_successors(client_ids=result.client_ids["succeeded"], now=now)
    _log_sweep(result)
    return result


# --- the registry ---------------------------------------------------------------------------------

SWEEPS: dict[str, Callable[..., SweepResult]] = {
    "expired": sweep_expired,
    "orphans": sweep_orphans,
}


def sweeps_available() -> dict[str, Callable[..., SweepResult]]:
    """Inventory's sweeps and those a higher app registered at start-up (``inventory.hooks.register_sweep``:
    approvals' ``lapsed`` requests and ``unauthorized`` tallies)."""
    return {**SWEEPS, **hooks.registered_sweeps()}


def sweep_run(name: str, **kwargs) -> SweepResult:
    """Run the sweep called ``name`` (``manage.py sweep <name>``); KeyError if nothing has that name."""
    return sweeps_available()[name](**kwargs)
