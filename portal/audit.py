"""The audit log: append events; the canonical bytes each event is logged as.

One module on purpose (over 400 lines): the append path and the canonical form of an entry must agree byte for
byte, so they are kept together; the log itself (tree, checkpoints, proofs) is ``portal.tlog``.

A change records its event with :func:`audit_record` (or builds it with :func:`audit_event` and writes it
inside a larger statement, :func:`event_insert`) inside the change's own transaction: if the change rolls
back, so does its event. Appending is a plain INSERT — no lock, no counter, nothing shared between writers.
The event has no place in the log yet: the sequencer (:mod:`portal.tlog.sequencer`) gives events their log
index shortly after they commit, adds their leaf hash (RFC 9162) over :func:`leaf_data` to the Merkle tree
and signs a checkpoint; after a commit that appended events a worker is nudged to do it now
(:mod:`portal.tlog.nudge`), and beat runs it every second anyway. See docs/audit-log.md.

Events appended before the log existed also carry the hash chain they were written with
(``prev_hash``/``hash``, :func:`compute_hash`); their leaves include it, and ``verify_audit`` still checks it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from portal.censor import censor  # also imported from here by callers that audit
from portal.middleware import current_request_id
from portal.models import ActorType, AuditEvent
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


# The canonical JSON encoder, built once (json.dumps builds a new encoder on every call with these options:
# the sequencer and verify_audit encode millions of values). Strings go straight to the C quoting function,
# which is what JSONEncoder.encode does for them.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_quote = json.encoder.encode_basestring


def _dumps(value: Any) -> str:
    return _quote(value) if type(value) is str else _encode(value)


def entry_bytes(
    event_id: int,
    occurred_at: dt.datetime | str,
    actor_type: str,
    actor_id: str,
    actor_label: str,
    action: str,
    object_type: str,
    object_id: str,
    before: Any,
    after: Any,
    reason: str,
    policy_version: int | None,
    request_id: str,
    prev_hash: str | None,
) -> bytes:
    """An event's canonical JSON: sorted keys, compact separators, UTF-8; ``prev_hash`` only when set.

    With ``prev_hash`` it is exactly the payload the hash chain hashed, so a chained event's leaf is its
    chain payload; events appended since the log took over have none. Positional arguments, one per column,
    so the sequencer and ``verify_audit`` can feed database rows without building model instances;
    ``occurred_at`` may come already formatted by the database (:data:`OCCURRED_AT_SQL`).
    """
    if isinstance(occurred_at, str):
        occurred = occurred_at
    else:
        occurred = occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    chain = f'"prev_hash":{_dumps(prev_hash)},' if prev_hash else ""
    q = _quote
    return (
        f'{{"action":{q(action)},"actor":[{q(actor_type)},{q(actor_id)},{q(actor_label)}],'
        f'"after":{"null" if after is None else _encode(after)},'
        f'"before":{"null" if before is None else _encode(before)},"id":{int(event_id)},'
        f'"object":[{q(object_type)},{q(object_id)}],"occurred_at":"{occurred}",'
        f'"policy_version":{"null" if policy_version is None else int(policy_version)},{chain}'
        f'"reason":{q(reason)},"request_id":{q(request_id)}}}'
    ).encode()


# PostgreSQL formats occurred_at exactly as entry_bytes does (UTC, microseconds, "+00:00"): reading millions of
# events, parsing each timestamp into a datetime only to format it again was a fifth of verify_audit's time.
OCCURRED_AT_SQL = """to_char("occurred_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def _entry_values(event: AuditEvent, prev_hash: str | None) -> tuple:
    return (
        event.id,
        event.occurred_at,
        event.actor_type,
        event.actor_id,
        event.actor_label,
        event.action,
        event.object_type,
        event.object_id,
        event.before,
        event.after,
        event.reason,
        event.policy_version,
        event.request_id,
        prev_hash,
    )


def leaf_data(event: AuditEvent) -> bytes:
    """The bytes ``event`` is logged as (the log entry; its leaf hash is SHA-256(0x00 || these bytes))."""
    return entry_bytes(*_entry_values(event, event.prev_hash or None))


def canonical_payload(event: AuditEvent) -> bytes:
    """The hash chain's payload of ``event`` (with its ``prev_hash``), as chained events were hashed."""
    return entry_bytes(*_entry_values(event, event.prev_hash))


def compute_hash(event: AuditEvent) -> str:
    """The hash chain's hash of a chained event."""
    return hashlib.sha256(canonical_payload(event)).hexdigest()


def _normalise(value: Any) -> tuple[Any, int]:
    """(value, bound): ``value`` round-tripped through JSON so what we log is exactly what the JSONField stores
    and returns; ``bound`` is at least the length of its canonical encoding (ASCII-escaped with spaces, as
    json.dumps writes it by default, is never shorter than compact UTF-8)."""
    if value is None:
        return None, 4
    text = json.dumps(censor(value), default=_json_default)
    return json.loads(text), len(text)


# --- the size bound -------------------------------------------------------------------------------------
# A log entry is served in a C2SP entry bundle (c2sp.org/tlog-tiles), which prefixes each entry with its length
# as a big-endian uint16: an entry is at most 65,535 bytes. An event is bounded when it is appended — the entry
# is computed from the stored columns, so what the database keeps is exactly what the log commits to:
#
# 1. strings of 1 KiB or more in ``before``/``after`` are replaced by a digest, largest first, until it fits;
# 2. if it still does not fit, the smallest object or array (``before`` or ``after`` included) whose digest
#    alone makes it fit is replaced; if none does, the largest, and so on;
# 3. the reason is cut last (``reason`` is the only unbounded text column besides them).
#
# A digest is {"$omitted": {"bytes": n, "sha256": hex}} over the value's canonical JSON (UTF-8): whoever holds
# the value (the registration's own row keeps the metadata) can show it is the one that was logged.

MAX_ENTRY_BYTES = 0xFFFF
_WIDEST_ID = 2**63 - 1  # the widest id an event can get: the bound holds before the INSERT assigns it
_STRING_FLOOR = 1024
OMITTED = "$omitted"


def _event_bound(event: AuditEvent, before_bound: int, after_bound: int) -> int:
    """A cheap upper bound of the entry's length: each text column escaped at worst 6 bytes a character."""
    text = (
        event.actor_type,
        event.actor_id,
        event.actor_label,
        event.action,
        event.object_type,
        event.object_id,
        event.reason,
        event.request_id,
    )
    return before_bound + after_bound + 6 * sum(len(t) for t in text) + 400


def _entry_size(event: AuditEvent) -> int:
    return len(entry_bytes(_WIDEST_ID, *_entry_values(event, None)[1:]))


def _digest(value: Any) -> dict:
    encoded = _encode(value).encode()
    return {OMITTED: {"bytes": len(encoded), "sha256": hashlib.sha256(encoded).hexdigest()}}


def _nodes(root: str, value: Any, path: tuple = ()) -> list[tuple[int, tuple, bool]]:
    """(encoded size, path, is a string) of every string and container in ``value``, in document order."""
    out: list[tuple[int, tuple, bool]] = []
    if isinstance(value, dict):
        if OMITTED in value and len(value) == 1:
            return out
        out.append((len(_encode(value).encode()), (root, *path), False))
        for key in sorted(value):
            out.extend(_nodes(root, value[key], (*path, key)))
    elif isinstance(value, list):
        out.append((len(_encode(value).encode()), (root, *path), False))
        for i, item in enumerate(value):
            out.extend(_nodes(root, item, (*path, i)))
    elif isinstance(value, str):
        out.append((len(_quote(value).encode()), (root, *path), True))
    return out


def _replace(event: AuditEvent, path: tuple) -> None:
    root, *keys = path
    if not keys:
        setattr(event, root, _digest(getattr(event, root)))
        return
    parent = getattr(event, root)
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = _digest(parent[keys[-1]])


def bound_event(event: AuditEvent, bound: int | None = None) -> AuditEvent:
    """Make ``event``'s log entry fit an entry bundle (the rule above). ``bound``: a known upper bound of its
    length, to skip the work for the events (nearly all) that are far from the limit."""
    if bound is not None and bound <= MAX_ENTRY_BYTES:
        return event
    size = _entry_size(event)
    if size <= MAX_ENTRY_BYTES:
        return event
    stub = len(_encode(_digest("")).encode()) + 8  # a digest's encoding, with room for a longer byte count
    nodes = _nodes("before", event.before) + _nodes("after", event.after)
    # sorted() is stable: strings of equal length are replaced in document order
    strings = sorted((n for n in nodes if n[2] and n[0] >= _STRING_FLOOR), key=lambda n: -n[0])
    for length, path, _ in strings:
        _replace(event, path)
        size -= length - stub
        if size <= MAX_ENTRY_BYTES and (size := _entry_size(event)) <= MAX_ENTRY_BYTES:
            return event
    size = _entry_size(event)
    while size > MAX_ENTRY_BYTES:
        nodes = _nodes("before", event.before) + _nodes("after", event.after)
        containers = [n for n in nodes if not n[2] and n[0] > stub]  # only a digest that saves bytes
        if not containers:
            break
        enough = [n for n in containers if n[0] - stub >= size - MAX_ENTRY_BYTES]
        _, path, _ = min(enough, key=lambda n: n[0]) if enough else max(containers, key=lambda n: n[0])
        _replace(event, path)
        size = _entry_size(event)
    if size > MAX_ENTRY_BYTES:
        reason = event.reason
        note = f" [cut: {len(reason)} characters, sha256 {hashlib.sha256(reason.encode()).hexdigest()}]"
        lo, hi = 0, len(reason)  # the longest prefix that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            event.reason = reason[:mid] + note
            if _entry_size(event) <= MAX_ENTRY_BYTES:
                lo = mid
            else:
                hi = mid - 1
        event.reason = reason[:lo] + note
    return event


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
    """A new event, not yet saved: see :func:`audit_record`."""
    before, before_bound = _normalise(before)
    after, after_bound = _normalise(after)
    event = AuditEvent(
        occurred_at=timezone.now(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label[:255],
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        before=before,
        after=after,
        reason=reason or "",
        policy_version=policy_version,
        request_id=(request_id if request_id is not None else current_request_id())[:64],
    )
    return bound_event(event, _event_bound(event, before_bound, after_bound))


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
    """Append one event (inside the caller's transaction, if there is one): one INSERT, no lock."""
    return audit_append(
        audit_event(
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=before,
            after=after,
            reason=reason,
            policy_version=policy_version,
            request_id=request_id,
        )
    )


def audit_append(event: AuditEvent) -> AuditEvent:
    """Append ``event`` (from :func:`audit_event`): see :func:`audit_record`."""
    connection = transaction.get_connection()
    _EVENT_INSERT.insert(event, using=connection.alias)
    log_appended(connection.alias)
    return event


# The single-event append runs on every registration, hundreds of times a second: its statement is written
# out once (portal.rawsql) rather than compiled by the ORM per call.
_EVENT_INSERT = InsertStatement(AuditEvent)


def event_insert(
    connection,
    event: AuditEvent,
    *,
    ctes: Sequence[tuple[str, str, Sequence[Any]]] = (),
    when: str = "",
    returning: Sequence[str] = (),
    expressions: Mapping[str, str] | None = None,
    source: str = "",
) -> tuple[str, list[Any]]:
    """PostgreSQL: one statement that inserts ``event`` after the data-modifying CTEs ``ctes`` — (name, sql,
    params), the change the event describes — and only if the SQL condition ``when`` holds (e.g. ``EXISTS
    (SELECT 1 FROM req)``); (sql, params). It returns the event's ``id`` then ``returning`` (see
    :func:`event_inserted`), or no row when ``when`` did not hold.

    ``expressions`` (attname → SQL over the row ``r`` and ``source``) take a column's value from the statement
    instead of ``event`` — e.g. a count the CTE's UPDATE ... RETURNING made; with ``source`` (a CTE's name) the
    event is inserted once per row of it, so none when it returned none (``portal.rawsql.InsertStatement``).
    """
    insert, insert_params = _EVENT_INSERT.from_select(
        event, connection, expressions=dict(expressions or {}), source=source
    )
    extra = "".join(f", {r}" for r in returning)
    with_ = ", ".join(f"{name} AS ({sql})" for name, sql, _ in ctes)
    sql = (
        f"{'WITH ' + with_ + ' ' if with_ else ''}{insert}{f' WHERE {when}' if when else ''}"
        f" RETURNING {connection.ops.quote_name(AuditEvent._meta.pk.column)}{extra}"
    )
    params = [p for _, _, cte_params in ctes for p in cte_params]
    return sql, [*params, *insert_params]


def event_inserted(event: AuditEvent, row: Sequence[Any], *, using: str) -> AuditEvent:
    """Mark ``event`` saved in ``using`` with the id :func:`event_insert` returned (``row[0]``)."""
    event.id = row[0]
    event._state.adding = False
    event._state.db = using
    log_appended(using)
    return event


def log_appended(using: str = "default") -> None:
    """Events were appended on ``using``: once the transaction commits, nudge the sequencer (never waiting
    for it). Registered once per transaction."""
    if not settings.REGISTRAR_LOG_NUDGE:
        return
    from portal.tlog.nudge import nudge_sequencer

    connection = connections[using]
    if not connection.in_atomic_block:
        nudge_sequencer()
    elif not any(entry[1] is nudge_sequencer for entry in connection.run_on_commit):
        transaction.on_commit(nudge_sequencer, using=using)


def audit_record_many(events: list[dict]) -> list[AuditEvent]:
    """Append many events with one bulk write (sweeps and bulk actions); same keys as :func:`audit_record`."""
    if not events:
        return []
    now = timezone.now()
    rows = []
    for spec in events:
        actor: Actor = spec["actor"]
        before, before_bound = _normalise(spec.get("before"))
        after, after_bound = _normalise(spec.get("after"))
        event = AuditEvent(
            occurred_at=now,
            actor_type=actor.type,
            actor_id=actor.id,
            actor_label=actor.label[:255],
            action=spec["action"],
            object_type=spec["object_type"],
            object_id=str(spec["object_id"]),
            before=before,
            after=after,
            reason=spec.get("reason", "") or "",
            policy_version=spec.get("policy_version"),
            request_id=(spec.get("request_id") or current_request_id())[:64],
        )
        rows.append(bound_event(event, _event_bound(event, before_bound, after_bound)))
    with transaction.atomic(savepoint=False):
        _insert_events(rows)
        log_appended(transaction.get_connection().alias)
    return rows


def _insert_events(rows: list[AuditEvent]) -> None:
    """Insert new events. On PostgreSQL their ids come from the table's sequence in one query and the rows go
    in with COPY (sweeps append 100k events; an INSERT whose parameters psycopg quotes client-side is several
    times slower); elsewhere a bulk_create."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        AuditEvent.objects.bulk_create(rows, batch_size=1000)
        return
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, len(rows)]
        )
        for event, (event_id,) in zip(rows, cursor.fetchall(), strict=True):
            event.id = event_id
    fields = AuditEvent._meta.concrete_fields
    json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    sql = f"COPY {table} ({', '.join(f.column for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for event in rows:
            values = []
            for f in fields:
                value = getattr(event, f.attname)
                values.append(json.dumps(value) if f.attname in json_fields and value is not None else value)
            copy.write_row(values)
    for event in rows:
        event._state.adding = False
        event._state.db = connection.alias


def verify_chain(batch_size: int = 5000):
    """Verify the whole audit log (see :func:`portal.tlog.verify.verify_log`): (events verified, first problem
    or None). Kept for the callers that ask "is the audit intact?"."""
    from portal.tlog.verify import verify_log

    report = verify_log(batch_size=batch_size)
    return report.events_verified, report.problem


def events_for(object_type: str, object_id: Any):
    return AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id)).order_by("id")
