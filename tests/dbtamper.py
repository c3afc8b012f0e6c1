"""What a database owner can do to the audit log's tables, on PostgreSQL and on SQLite alike: tests of the
log's defences (verify_audit, the framework report, the explain page) play the attacker with these."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

LOG_TABLES = ("portal_auditevent", "portal_logcheckpoint", "portal_logtile")


def saved_triggers(cursor) -> list[tuple[str, str]]:
    """SQLite: (name, CREATE statement) of every trigger on the log's tables."""
    cursor.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN (%s, %s, %s)", LOG_TABLES
    )
    return cursor.fetchall()


@contextmanager
def triggers_off() -> Iterator[None]:
    """Write with the append-only triggers off: PostgreSQL for the session (as replication does), SQLite by
    dropping them and creating them again afterwards."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
            try:
                yield
            finally:
                cursor.execute("SET session_replication_role = DEFAULT")
            return
        saved = saved_triggers(cursor)
        for name, _ in saved:
            cursor.execute(f'DROP TRIGGER "{name}"')
        try:
            yield
        finally:
            for _, sql in saved:
                cursor.execute(sql)


def disable_event_trigger() -> str:
    """Switch off one of the triggers that keep audit events from being changed; returns its name."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER audit_immutable")
            return "audit_immutable"
        cursor.execute('DROP TRIGGER "audit_no_update"')
        return "audit_no_update"


def set_event_id_sequence(last_id: int) -> None:
    """The next audit event id is ``last_id + 1`` after rows were inserted with explicit ids (PostgreSQL's
    sequence does not follow them; SQLite's AUTOINCREMENT counter does by itself)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT setval(pg_get_serial_sequence('portal_auditevent', 'id'), %s)", [last_id])
