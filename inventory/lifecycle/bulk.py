"""Set-based transitions for sweeps and break glass: many locked clients in one UPDATE, one bulk audit insert.

Same rules and effects as :func:`inventory.lifecycle.transitions.client_transition`, for sets of clients the
caller has already locked.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory.choices import CLIENT_TRANSITIONS, ENDED_STATES, LIVE_STATES, ClientState
from inventory.lifecycle.errors import LifecycleError
from inventory.lifecycle.holds import Hold
from inventory.lifecycle.state import IDP_OPERATION_ON_ENTER, client_snapshot
from inventory.models import Client, OutboxEntry
from portal.audit import Actor, audit_record_many

logger = logging.getLogger(__name__)


@dataclass
class BulkResult:
    transitioned: list[int] = field(default_factory=list)
    cascaded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # already suspended, now under the hold as well

    @property
    def count(self) -> int:
        return len(self.transitioned)


def clients_transition_many(
    *,
    clients: list[Client],
    target: str,
    actor: Actor,
    reason: str = "",
    action: str | None = None,
    now: dt.datetime | None = None,
    push_to_idp: bool = True,
    cascade: bool = True,
    nudge: bool = True,
    hold: Hold | None = None,
    hold_action: str = "client.hold",
) -> BulkResult:
    """Transition many clients the caller has ALREADY LOCKED, in the caller's transaction.

    Same rules and effects as :func:`client_transition`, set-based: one UPDATE, one audit event per
    client (one chained bulk insert), one outbox row per client (one bulk insert). Illegal moves are
    skipped, not raised, because a sweep's filter and the lock decide the set; so are held clients when
    the target is active. With ``hold`` (target suspended) clients that are already suspended get the hold
    too (``hold_action`` events). Live descendants are locked with SKIP LOCKED and ended or suspended the
    same way; any a concurrent transaction holds are caught by the expiry sweep's lineage pass on its next
    run (see ``inventory.sweeps``) when their ancestor ended.
    """
    if hold is not None and target != ClientState.SUSPENDED:
        raise ValueError("a hold comes with a suspension")
    if not transaction.get_connection().in_atomic_block:
        raise LifecycleError("clients_transition_many must run inside the transaction that locked the rows")
    now = now or timezone.now()
    result = BulkResult()
    legal, to_hold = [], []
    for client in clients:
        if target == ClientState.ACTIVE and client.hold_kind:
            result.skipped.append(client.pk)  # the gate: only a hold lift makes a held client active
        elif target in CLIENT_TRANSITIONS.get(client.state, frozenset()):
            legal.append(client)
        elif hold is not None and client.state == ClientState.SUSPENDED and not client.hold_kind:
            to_hold.append(client)
        else:
            result.skipped.append(client.pk)
    events: list[dict[str, Any]] = []
    hold_columns = hold.columns(now) if hold is not None else {}
    ids = [c.pk for c in legal]
    if legal:
        updates: dict[str, Any] = {"state": target, "state_changed_at": now, **hold_columns}
        if target in ENDED_STATES:
            updates["ended_at"] = Coalesce(F("ended_at"), now)
        if target == ClientState.ACTIVE:
            updates["activated_at"] = Coalesce(F("activated_at"), now)
        Client.objects.filter(pk__in=ids).update(**updates)
        for client in legal:
            before = client_snapshot(client)
            client.state, client.state_changed_at = target, now
            if target in ENDED_STATES and client.ended_at is None:
                client.ended_at = now
            client.__dict__.update(hold_columns)
            events.append(
                {
                    "actor": actor,
                    "action": action or f"client.{target}",
                    "object_type": "client",
                    "object_id": client.registration_id,
                    "before": before,
                    "after": client_snapshot(client),
                    "reason": reason,
                    "policy_version": client.policy_version,
                }
            )
    if to_hold:
        result.held = [c.pk for c in to_hold]
        Client.objects.filter(pk__in=result.held, state=ClientState.SUSPENDED).update(**hold_columns)
        for client in to_hold:
            before = client_snapshot(client)
            client.__dict__.update(hold_columns)
            events.append(
                {
                    "actor": actor,
                    "action": hold_action,
                    "object_type": "client",
                    "object_id": client.registration_id,
                    "before": before,
                    "after": client_snapshot(client),
                    "reason": reason,
                    "policy_version": client.policy_version,
                }
            )
    if events:
        audit_record_many(events)
    operation = IDP_OPERATION_ON_ENTER.get(target)
    if legal and push_to_idp and operation:
        outbox_insert_many([(c.pk, c.idp_id) for c in legal], operation=operation, now=now)
        if nudge:
            transaction.on_commit(outbox_nudge)
    result.transitioned = ids
    if not cascade:
        return result
    if target in (ClientState.RETIRED, ClientState.REVOKED, ClientState.EXPIRED):
        parents, descendant_target = ids, (ClientState.RETIRED if target == ClientState.EXPIRED else target)
    elif target == ClientState.SUSPENDED:
        # Every client now suspended passes it on, including those that already were: their descendants
        # may have been resumed since.
        parents, descendant_target = [c.pk for c in clients if c.state == ClientState.SUSPENDED], target
    else:
        return result
    if not parents:
        return result
    children = list(
        Client.objects.filter(parent_id__in=parents, state__in=LIVE_STATES)
        .exclude(pk__in=[c.pk for c in clients])
        .select_for_update(skip_locked=True)
        .order_by("pk")
    )
    if children:
        sub = clients_transition_many(
            clients=children,
            target=descendant_target,
            actor=actor,
            reason=reason or f"parent {target}",
            action=f"client.{descendant_target}.cascade",
            now=now,
            push_to_idp=push_to_idp,
            nudge=False,
            hold=hold.for_descendants() if hold is not None else None,
            hold_action="client.hold.cascade",
        )
        result.cascaded = sub.transitioned + sub.held + sub.cascaded
    return result


# Columns a set-based transition reads: sweeps load only these (no decrypting ``idp_state`` per row).
TRANSITION_FIELDS = (
    "id",
    "registration_id",
    "state",
    "owner",
    "idp",
    "scopes",
    "expires_at",
    "risk_tier",
    "policy_version",
    "ended_at",
    "activated_at",
    "last_used_at",
    "orphaned_at",
    "stale_at",
    "hold_kind",
    "hold_by",  # the audit snapshot of a held client names who held it (else one deferred load per client)
    "hold_ref",
)


def outbox_insert_many(rows: list[tuple[int, int]], *, operation: str, now: dt.datetime) -> None:
    """One pending outbox row per (client id, idp id), in the caller's transaction.

    On PostgreSQL this is a COPY: for sweeps of 100k clients it is several times faster than an
    INSERT whose parameters psycopg quotes client-side. Elsewhere (SQLite demo) a bulk_create.
    """
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        OutboxEntry.objects.bulk_create(
            [OutboxEntry(client_id=c, idp_id=i, operation=operation, next_attempt_at=now) for c, i in rows],
            batch_size=1000,
        )
        return
    # Every concrete column, so fields added later (with Python-side defaults) are filled too.
    fields = [f for f in OutboxEntry._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    template = {
        f.attname: now if getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False) else f.get_default()
        for f in fields
    }
    template |= {"operation": operation, "next_attempt_at": now}
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {OutboxEntry._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for client_id, idp_id in rows:
            row = template | {"client_id": client_id, "idp_id": idp_id}
            copy.write_row(tuple(row[f.attname] for f in fields))


def outbox_nudge() -> None:
    """Tell the workers outbox rows are due: once per batch or per pass, never per client (the periodic requeue
    finds every due outbox row anyway)."""
    try:
        from portal.celery import app

        app.send_task("inventory.tasks.requeue_outbox")
    except Exception:  # broker down: beat's requeue_outbox picks the rows up
        logger.warning("event=outbox_requeue_nudge_failed")


def live_lineage_ids(root_ids: list[int]) -> list[int]:
    """Ids of the given clients and all their descendants (live or not), level by level."""
    seen: list[int] = list(root_ids)
    frontier = list(root_ids)
    while frontier:
        frontier = list(Client.objects.filter(parent_id__in=frontier).exclude(pk__in=seen).values_list("pk", flat=True))
        seen.extend(frontier)
    return seen
