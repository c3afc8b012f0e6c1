"""The audit chain: append events, verify the chain.

Each event's ``hash`` is the SHA-256 of its canonical JSON, which includes its id and the previous event's
hash. Appends are serialised by the single ``AuditHead`` row: on PostgreSQL one statement moves the head
(its row lock) and inserts the event, with the hash computed by the database from the same canonical bytes
(:func:`chained_insert`); SQLite serialises writers itself. Concurrent writers can never fork the chain.
Call :func:`audit_record` inside the transaction of the change it describes: if the change rolls back, so
does its event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.censor import censor  # also imported from here by callers that audit
from portal.middleware import current_request_id
from portal.models import ActorType, AuditEvent, AuditHead
from portal.rawsql import InsertStatement

GENESIS_HASH = "0" * 64


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


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_parts(event: AuditEvent) -> tuple[bytes, bytes, bytes]:
    """The canonical payload split around its two chain fields: ``a + id + b + prev_hash + c``.

    The payload is the event's JSON with sorted keys and compact separators; ``id`` (a number) and ``prev_hash``
    (a hex string) are spliced in, so PostgreSQL can hash an event whose id and previous hash it assigns under
    the head's lock (:func:`chained_insert`) byte for byte as :func:`compute_hash` does.
    """
    a = (
        f'{{"action":{_dumps(event.action)},'
        f'"actor":{_dumps([event.actor_type, event.actor_id, event.actor_label])},'
        f'"after":{_dumps(event.after)},"before":{_dumps(event.before)},"id":'
    )
    occurred = event.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    b = (
        f',"object":{_dumps([event.object_type, event.object_id])},"occurred_at":{_dumps(occurred)},'
        f'"policy_version":{_dumps(event.policy_version)},"prev_hash":"'
    )
    c = f'","reason":{_dumps(event.reason)},"request_id":{_dumps(event.request_id)}}}'
    return a.encode(), b.encode(), c.encode()


def canonical_payload(event: AuditEvent) -> bytes:
    a, b, c = canonical_parts(event)
    return b"".join((a, str(event.id).encode(), b, event.prev_hash.encode(), c))


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_payload(event)).hexdigest()


def _normalise(value: Any) -> Any:
    # Round-trip through JSON so what we hash is exactly what the JSONField stores and returns.
    if value is None:
        return None
    return json.loads(json.dumps(censor(value), default=_json_default))


def audit_event(
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
    """A new event, not yet on the chain (no id, ``prev_hash`` or ``hash``): see :func:`audit_record`."""
    return AuditEvent(
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
    )


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
    """Append one event to the chain (inside the caller's transaction, if there is one).

    On PostgreSQL the append is a single statement (:func:`chained_insert`): the head's row lock is held
    for that statement and the commit, never across a round trip to Python. Elsewhere the head is locked,
    the hash computed here and the event inserted.
    """
    return audit_append(audit_event(
        actor=actor, action=action, object_type=object_type, object_id=object_id, before=before, after=after,
        reason=reason, policy_version=policy_version, request_id=request_id,
    ))  # fmt: skip


def audit_append(event: AuditEvent) -> AuditEvent:
    """Append ``event`` (from :func:`audit_event`) to the chain: see :func:`audit_record`."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        sql, params = chained_insert(connection, event)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            chained(event, cursor.fetchone(), using=connection.alias)
        return event
    with transaction.atomic(savepoint=False):
        last_event_id, last_hash = _lock_head(connection)
        event.id = last_event_id + 1
        event.prev_hash = last_hash
        event.hash = compute_hash(event)
        _EVENT_INSERT.insert(event, using=connection.alias)
        AuditHead.objects.using(connection.alias).filter(id=1).update(
            last_event_id=event.id, last_hash=event.hash, prev_hash=event.prev_hash
        )
    return event


# The single-event append runs on every registration, hundreds of times a second: its statement is written
# out once (portal.rawsql) rather than compiled by the ORM per call.
_EVENT_INSERT = InsertStatement(AuditEvent)
_CHAIN_COLUMNS = {"id": "head.last_event_id", "prev_hash": "head.prev_hash", "hash": "head.last_hash"}


def chained_insert(
    connection,
    event: AuditEvent,
    *,
    ctes: Sequence[tuple[str, str, Sequence[Any]]] = (),
    when: str = "",
    returning: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """PostgreSQL: one statement that appends ``event`` to the chain; (sql, params).

    The database moves the head (creating it on first use, ``ON CONFLICT``), assigns the event its id and
    previous hash, and hashes :func:`canonical_parts` with them spliced in: the same bytes, so the same hash,
    as :func:`compute_hash`. ``ctes`` — (name, sql, params) — run first in the same statement (the change the
    event describes), and the event is appended only if the SQL condition ``when`` holds (e.g. ``EXISTS
    (SELECT 1 FROM req)``). It returns ``id, prev_hash, hash`` (see :func:`chained`) then ``returning``, or no
    row when ``when`` did not hold.
    """
    qn = connection.ops.quote_name
    a, b, c = canonical_parts(event)

    def digest(event_id: str, prev: str) -> str:
        return (f"encode(sha256(%s::bytea || convert_to(({event_id})::text, 'UTF8') || %s::bytea"
                f" || convert_to({prev}, 'UTF8') || %s::bytea), 'hex')")  # fmt: skip

    head_table = qn(AuditHead._meta.db_table)
    head = (
        f"INSERT INTO {head_table} AS h (id, last_event_id, prev_hash, last_hash)"  # noqa: S608
        f" SELECT 1, 1, %s, {digest('1', '%s')}{f' WHERE {when}' if when else ''}"
        " ON CONFLICT (id) DO UPDATE SET last_event_id = h.last_event_id + 1, prev_hash = h.last_hash,"
        f" last_hash = {digest('h.last_event_id + 1', 'h.last_hash')}"
        " RETURNING last_event_id, prev_hash, last_hash"
    )
    head_params = [GENESIS_HASH, a, b, GENESIS_HASH, c, a, b, c]
    insert, insert_params = _EVENT_INSERT.from_select(event, connection, expressions=_CHAIN_COLUMNS, source="head")
    extra = "".join(f", {r}" for r in returning)
    with_ = ", ".join(f"{name} AS ({sql})" for name, sql, _ in ctes)
    sql = f"WITH {with_ + ', ' if with_ else ''}head AS ({head}) {insert} RETURNING id, prev_hash, hash{extra}"
    params = [p for _, _, cte_params in ctes for p in cte_params]
    return sql, [*params, *head_params, *insert_params]


def chained(event: AuditEvent, row: Sequence[Any], *, using: str) -> AuditEvent:
    """Set what :func:`chained_insert` returned (id, prev_hash, hash) on ``event``, now saved in ``using``."""
    event.id, event.prev_hash, event.hash = row[0], row[1], row[2]
    event._state.adding = False
    event._state.db = using
    return event


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
        AuditHead.objects.filter(id=1).update(
            last_event_id=rows[-1].id, last_hash=rows[-1].hash, prev_hash=rows[-1].prev_hash
        )
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
