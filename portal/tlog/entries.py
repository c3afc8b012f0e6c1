"""Log entries straight from the event table: the columns :func:`portal.audit.entry_bytes` needs, read
with plain SQL (no model instances: the sequencer and ``verify_audit`` read events by the million)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import queue
import threading
from collections.abc import Iterator
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]  # CPython's C encoder
from typing import Any

from django.db import connections

from portal.audit import OCCURRED_AT_SQL, _encode, _quote, entry_bytes
from portal.models import AuditEvent

_TABLE = AuditEvent._meta.db_table
# entry_bytes' arguments in order, then what callers need besides.
_COLUMNS = (
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
    "reason",
    "policy_version",
    "request_id",
    "prev_hash",
)


def select_list(vendor: str) -> str:
    # JSON as text on PostgreSQL: parsed here exactly as the JSONField parses it, whatever psycopg's loaders;
    # the timestamp already in the entry's format.
    if vendor != "postgresql":
        return ", ".join(f'"{c}"' for c in _COLUMNS)
    special = {"before": '"before"::text', "after": '"after"::text', "occurred_at": OCCURRED_AT_SQL}
    return ", ".join(special.get(c, f'"{c}"') for c in _COLUMNS)


def _datetime(value: Any) -> dt.datetime | str:
    if isinstance(value, str):
        if "T" in value:  # PostgreSQL formatted it already (OCCURRED_AT_SQL)
            return value
        value = dt.datetime.fromisoformat(value)  # SQLite keeps UTC datetimes as "YYYY-MM-DD HH:MM:SS.ffffff"
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


_loads = json.loads
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads minus its two whitespace regex matches
# The canonical encoder (portal.audit's: sorted keys, compact separators, UTF-8, floats as repr) made once: the
# JSONEncoder.encode it matches builds this C encoder anew on every call. No cycle check: values come from JSON.
_iterencode = (
    c_make_encoder(None, json.JSONEncoder().default, encode_basestring, None, ":", ",", True, False, True)
    if c_make_encoder is not None
    else None
)


def canonical_json(text: str) -> str:
    """The canonical encoding (:func:`portal.audit.entry_bytes`) of the JSON document ``text`` — exactly
    ``_encode(json.loads(text))``, at half its cost."""
    if _iterencode is None:  # pragma: no cover - CPython always has the C encoder
        return _encode(_loads(text))
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):
        value = _loads(text)  # leading or trailing whitespace (SQLite keeps what json.dumps wrote), or the error
    return "".join(_iterencode(value, 0))


def row_entry(row: tuple) -> bytes:
    """The log entry of a row selected with :func:`select_list`."""
    (
        event_id,
        occurred_at,
        actor_type,
        actor_id,
        actor_label,
        action,
        object_type,
        object_id,
        before,
        after,
        reason,
        policy_version,
        request_id,
        prev_hash,
    ) = row[:14]
    return entry_bytes(
        event_id,
        _datetime(occurred_at),
        actor_type,
        actor_id,
        actor_label,
        action,
        object_type,
        object_id,
        None if before is None else _loads(before),
        None if after is None else _loads(after),
        reason,
        policy_version,
        request_id,
        prev_hash or None,
    )


def rows_entries(rows: list[tuple], vendor: str) -> list[bytes]:
    """The log entries of rows selected with :func:`select_list`, in order: :func:`row_entry` for each, written
    out for speed (the sequencer and ``verify_audit`` build entries by the million) and tested to agree."""
    if vendor != "postgresql":
        return [row_entry(row) for row in rows]
    q, canon = _quote, canonical_json
    # PostgreSQL: occurred_at formatted by the database (OCCURRED_AT_SQL), JSON columns as text.
    return [
        (
            f'{{"action":{q(action)},"actor":[{q(actor_type)},{q(actor_id)},{q(actor_label)}],'
            f'"after":{"null" if after is None else canon(after)},'
            f'"before":{"null" if before is None else canon(before)},"id":{event_id},'
            f'"object":[{q(object_type)},{q(object_id)}],"occurred_at":"{occurred_at}",'
            f'"policy_version":{"null" if policy_version is None else policy_version},'
            f"{chain(prev_hash) if prev_hash else ''}"
            f'"reason":{q(reason)},"request_id":{q(request_id)}}}'
        ).encode()
        for (
            event_id,
            occurred_at,
            actor_type,
            actor_id,
            actor_label,
            action,
            object_type,
            object_id,
            before,
            after,
            reason,
            policy_version,
            request_id,
            prev_hash,
            *_,
        ) in rows
    ]


def chain(prev_hash: str) -> str:
    return f'"prev_hash":{_quote(prev_hash)},'


INDEX = 15  # where iter_rows' rows have the log index (after select_list's columns and the legacy hash)


def iter_rows(
    *, start: int = 0, batch_size: int = 5000, using: str = "default", prefetch: bool = False
) -> Iterator[list[tuple]]:
    """Batches of sequenced events' rows (:func:`select_list`, then the legacy ``hash``, then ``log_index``) from
    log index ``start``, in log order. Keyset batches over the unique log-index index: memory stays flat.

    ``prefetch``: a thread with its own connection reads the next batch while the caller works on this one, so
    the database formats rows on one core while Python builds entries on the other (about half of a row's cost
    is the server's). Only outside a transaction — another connection would not see its writes; inside one, the
    batches are read in turn on the caller's connection.
    """
    connection = connections[using]
    sql = (
        f'SELECT {select_list(connection.vendor)}, "hash", "log_index" FROM {_TABLE} '  # noqa: S608
        'WHERE "log_index" >= %s ORDER BY "log_index" LIMIT %s'
    )
    if prefetch and not connection.in_atomic_block:
        yield from _prefetched(sql, start, batch_size, using)
        return
    position = start
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [position, batch_size])
            rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        position = rows[-1][INDEX] + 1


def _prefetched(sql: str, start: int, batch_size: int, using: str) -> Iterator[list[tuple]]:
    batches: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def fetch() -> None:
        connection = connections[using]  # this thread's own connection
        try:
            position = start
            while not stop.is_set():
                with connection.cursor() as cursor:
                    cursor.execute(sql, [position, batch_size])
                    rows = cursor.fetchall()
                batches.put(rows)
                if not rows:
                    return
                position = rows[-1][INDEX] + 1
        except BaseException as exc:  # handed to the consumer, which raises it
            batches.put(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=fetch, name="tlog-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            rows = batches.get()
            if isinstance(rows, BaseException):
                raise rows
            if not rows:
                return
            yield rows
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put() the consumer will never take
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.05)
        thread.join()


def iter_entries(
    *, start: int = 0, batch_size: int = 5000, using: str = "default"
) -> Iterator[tuple[int, int, str, str | None, bytes]]:
    """(log index, event id, legacy prev_hash, legacy hash, entry) for every sequenced event from log index
    ``start``, in log order."""
    vendor = connections[using].vendor
    for rows in iter_rows(start=start, batch_size=batch_size, using=using):
        for row, entry in zip(rows, rows_entries(rows, vendor), strict=True):
            yield row[INDEX], row[0], row[13], row[14], entry
