"""Log entries straight from the event table: the columns :func:`portal.audit.entry_bytes` needs, read
with plain SQL (no model instances: the sequencer and ``verify_audit`` read events by the million)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from django.db import connections

from portal.audit import OCCURRED_AT_SQL, entry_bytes
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


def iter_entries(
    *, start: int = 0, batch_size: int = 5000, using: str = "default"
) -> Iterator[tuple[int, int, str, str | None, bytes]]:
    """(log index, event id, legacy prev_hash, legacy hash, entry) for every sequenced event from log index
    ``start``, in log order.

    Keyset batches over the unique log-index index, so memory stays flat at any log size.
    """
    connection = connections[using]
    sql = (
        f'SELECT {select_list(connection.vendor)}, "hash", "log_index" FROM {_TABLE} '  # noqa: S608
        'WHERE "log_index" >= %s ORDER BY "log_index" LIMIT %s'
    )
    position = start
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [position, batch_size])
            rows = cursor.fetchall()
        if not rows:
            return
        for row in rows:
            yield row[15], row[0], row[13], row[14], row_entry(row)
        position = rows[-1][15] + 1
