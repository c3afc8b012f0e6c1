"""The audit chain: append events, verify the chain.

Appends are serialised by locking the single ``AuditHead`` row (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite serialises writers itself), so concurrent writers can never fork the chain.
Call :func:`audit_record` inside the transaction of the change it describes: if the change rolls
back, so does its event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.middleware import current_request_id
from portal.models import ActorType, AuditEvent, AuditHead
from portal.rawsql import InsertStatement

GENESIS_HASH = "0" * 64
SENSITIVE_KEYS = frozenset(
    {
        "token",
        "access_token",
        "registration_access_token",
        "initial_access_token",
        "client_secret",
        "secret",
        "password",
        "private_key",
        "admin_client_secret",
        "admin_token",
        "d",
    }
)


@dataclass(frozen=True)
class Actor:
    """Who did something: a person, an agent (a registration credential) or the system."""

    type: str
    id: str
    label: str

    @classmethod
    def user(cls, user) -> Actor:
        return cls(ActorType.USER, str(user.pk), user.get_username())

    @classmethod
    def agent(cls, label: str, ident: str = "") -> Actor:
        return cls(ActorType.AGENT, ident, label)

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(ActorType.SYSTEM, "", name)

    @property
    def is_human(self) -> bool:
        return self.type == ActorType.USER


def censor(value: Any) -> Any:
    """Replace secret-bearing keys in nested mappings before they reach the audit log or logs."""
    if isinstance(value, Mapping):
        return {k: ("********" if k in SENSITIVE_KEYS and v else censor(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [censor(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def canonical_payload(event: AuditEvent) -> bytes:
    payload = {
        "id": event.id,
        "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": [event.actor_type, event.actor_id, event.actor_label],
        "action": event.action,
        "object": [event.object_type, event.object_id],
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "policy_version": event.policy_version,
        "request_id": event.request_id,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_payload(event)).hexdigest()


def _normalise(value: Any) -> Any:
    # Round-trip through JSON so what we hash is exactly what the JSONField stores and returns.
    if value is None:
        return None
    return json.loads(json.dumps(censor(value), default=_json_default))


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: Any,
    before: Mapping | None = None,
    after: Mapping | None = None,
    reason: str = "",
    policy_version: int | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Append one event to the chain (inside the caller's transaction).

    ``savepoint=False``: when called inside a transaction (the usual case) the event simply joins it,
    saving two round trips while the chain head is locked — the lock is the throughput ceiling. For the
    same reason the append is two statements: lock the head, then insert the event and move the head.
    """
    with transaction.atomic(savepoint=False):
        connection = transaction.get_connection()
        last_event_id, last_hash = _lock_head(connection)
        event = AuditEvent(
            id=last_event_id + 1,
            occurred_at=timezone.now(),
            actor_type=actor.type,
            actor_id=actor.id,
            actor_label=actor.label[:255],
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            before=_normalise(before),
            after=_normalise(after),
            reason=reason or "",
            policy_version=policy_version,
            request_id=(request_id if request_id is not None else current_request_id())[:64],
            prev_hash=last_hash,
        )
        event.hash = compute_hash(event)
        _append(connection, event)
    return event


# The single-event append runs on every registration, hundreds of times a second, while the chain head is
# locked: its two statements are written out once (portal.rawsql) rather than compiled by the ORM per call.
_EVENT_INSERT = InsertStatement(AuditEvent)


def _lock_head(connection) -> tuple[int, str]:
    """Lock the chain head (``FOR UPDATE`` where the database has it) and return (last id, last hash)."""
    qn = connection.ops.quote_name
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = f"SELECT last_event_id, last_hash FROM {qn(AuditHead._meta.db_table)} WHERE id = 1{lock}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    if row is None:  # a new database: create the head (get_or_create copes with a concurrent first writer)
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        return head.last_event_id, head.last_hash
    return row[0], row[1]


def _append(connection, event: AuditEvent) -> None:
    """Insert ``event`` and move the head to it: one statement on PostgreSQL (a data-modifying CTE)."""
    head = f"UPDATE {connection.ops.quote_name(AuditHead._meta.db_table)} SET last_event_id = %s, last_hash = %s WHERE id = 1"  # noqa: S608
    insert = _EVENT_INSERT.sql(connection)
    params = _EVENT_INSERT.params(event, connection)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"WITH appended AS ({insert}) {head}", [*params, event.id, event.hash])
        else:
            cursor.execute(insert, params)
            cursor.execute(head, [event.id, event.hash])


def audit_record_many(events: list[dict]) -> list[AuditEvent]:
    """Append many events under one head lock with one bulk INSERT (used by sweeps and bulk actions)."""
    if not events:
        return []
    with transaction.atomic(savepoint=False):
        last_event_id, prev_hash = _lock_head(transaction.get_connection())
        next_id = last_event_id + 1
        now = timezone.now()
        rows = []
        for spec in events:
            actor: Actor = spec["actor"]
            event = AuditEvent(
                id=next_id,
                occurred_at=now,
                actor_type=actor.type,
                actor_id=actor.id,
                actor_label=actor.label[:255],
                action=spec["action"],
                object_type=spec["object_type"],
                object_id=str(spec["object_id"]),
                before=_normalise(spec.get("before")),
                after=_normalise(spec.get("after")),
                reason=spec.get("reason", "") or "",
                policy_version=spec.get("policy_version"),
                request_id=(spec.get("request_id") or current_request_id())[:64],
                prev_hash=prev_hash,
            )
            event.hash = compute_hash(event)
            prev_hash = event.hash
            next_id += 1
            rows.append(event)
        _insert_events(rows)
        AuditHead.objects.filter(id=1).update(last_event_id=rows[-1].id, last_hash=rows[-1].hash)
    return rows


def _insert_events(rows: list[AuditEvent]) -> None:
    """Insert prepared events. On PostgreSQL a COPY (sweeps append 100k events; an INSERT whose
    parameters psycopg quotes client-side is several times slower); elsewhere a bulk_create."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        AuditEvent.objects.bulk_create(rows, batch_size=1000)
        return
    fields = AuditEvent._meta.concrete_fields
    json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    sql = f"COPY {AuditEvent._meta.db_table} ({', '.join(f.column for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for event in rows:
            values = []
            for f in fields:
                value = getattr(event, f.attname)
                values.append(json.dumps(value) if f.attname in json_fields and value is not None else value)
            copy.write_row(values)


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    problem: str


def verify_chain(batch_size: int = 5000) -> tuple[int, ChainBreak | None]:
    """Walk the chain in id order; return (events checked, first break or None)."""
    checked = 0
    prev_hash = GENESIS_HASH
    expected_id = None
    for event in _iter_events(batch_size):
        if expected_id is not None and event.id != expected_id:
            return checked, ChainBreak(expected_id, f"event {expected_id} is missing (next is {event.id})")
        if event.prev_hash != prev_hash:
            return checked, ChainBreak(event.id, "prev_hash does not match the previous event's hash")
        if compute_hash(event) != event.hash:
            return checked, ChainBreak(event.id, "content does not match its hash (row altered)")
        prev_hash = event.hash
        expected_id = event.id + 1
        checked += 1
    head = AuditHead.objects.filter(id=1).first()
    if head and checked and head.last_hash != prev_hash:
        return checked, ChainBreak(head.last_event_id, "chain head does not match the last event (rows removed)")
    return checked, None


def _iter_events(batch_size: int) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        batch = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id")[:batch_size])
        if not batch:
            return
        yield from batch
        last_id = batch[-1].id


def events_for(object_type: str, object_id: Any):
    return AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id)).order_by("id")
