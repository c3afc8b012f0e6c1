"""SQLite's search index: an FTS5 table with the trigram tokenizer over the clients' free-text columns.

PostgreSQL searches with pg_trgm and a tsvector (migration 0005); SQLite (``make run``, the first database a
new user sees) has neither, so without this it could only ``icontains`` the whole term: no typos, and "ticket
triage" missed "ticket-triage-bot". The FTS5 table is external-content (it stores only the index; the text
stays in ``inventory_client``) and three triggers keep it current on every write, whatever path writes: ORM,
bulk updates or raw SQL. Created by migration 0015; ``ensure_sqlite_fts`` also runs after every ``migrate``,
because SQLite's schema editor rebuilds a table to alter it and that drops the table's triggers.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError

from portal.logs import log_event

logger = logging.getLogger(__name__)

FTS_TABLE = "inventory_client_fts"
FTS_COLUMNS = ("name", "purpose", "software_id")
# The trigram tokenizer arrived in SQLite 3.34.
MIN_SQLITE = (3, 34, 0)

_cols = ", ".join(FTS_COLUMNS)
_new = ", ".join(f"new.{c}" for c in FTS_COLUMNS)
_old = ", ".join(f"old.{c}" for c in FTS_COLUMNS)
_delete_old = f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {_cols}) VALUES ('delete', old.id, {_old});"  # noqa: S608  (constants only)
_insert_new = f"INSERT INTO {FTS_TABLE}(rowid, {_cols}) VALUES (new.id, {_new});"  # noqa: S608

TRIGGERS = {
    f"{FTS_TABLE}_ai": f"AFTER INSERT ON inventory_client BEGIN {_insert_new} END",
    f"{FTS_TABLE}_ad": f"AFTER DELETE ON inventory_client BEGIN {_delete_old} END",
    f"{FTS_TABLE}_au": f"AFTER UPDATE OF {_cols} ON inventory_client BEGIN {_delete_old} {_insert_new} END",
}
CREATE_TABLE = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5({_cols}, "
    "content='inventory_client', content_rowid='id', tokenize='trigram')"
)


def sqlite_fts_supported(connection) -> bool:
    if connection.vendor != "sqlite":
        return False
    import sqlite3

    return sqlite3.sqlite_version_info >= MIN_SQLITE


def sqlite_fts_ready(connection) -> bool:
    """The index table and its three triggers exist (one small read of sqlite_master)."""
    if not sqlite_fts_supported(connection):
        return False
    names = [FTS_TABLE, *TRIGGERS]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM sqlite_master WHERE name IN ({', '.join(['%s'] * len(names))})",  # noqa: S608
            names,
        )
        (found,) = cursor.fetchone()
    return found == len(names)


def ensure_sqlite_fts(connection) -> bool:
    """Create the index and its triggers where missing and rebuild it from the table; True if it did anything.
    A no-op on PostgreSQL and on a SQLite without the trigram tokenizer (search then falls back to icontains)."""
    if not sqlite_fts_supported(connection) or sqlite_fts_ready(connection):
        return False
    if "inventory_client" not in connection.introspection.table_names():
        return False  # migrated back to before the clients table: nothing to index
    try:
        with connection.cursor() as cursor:
            cursor.execute(CREATE_TABLE)
            for name, body in TRIGGERS.items():
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
                cursor.execute(f"CREATE TRIGGER {name} {body}")
            cursor.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")  # noqa: S608
    except DatabaseError as exc:  # e.g. a SQLite built without FTS5: search keeps its icontains fallback
        log_event(logger, "search.fts_unavailable", level=logging.WARNING, error=str(exc))
        return False
    log_event(logger, "search.fts_built", table=FTS_TABLE)
    return True


def drop_sqlite_fts(connection) -> None:
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for name in TRIGGERS:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        cursor.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")


def ensure_after_migrate(sender, using="default", **kwargs) -> None:
    """``post_migrate``: repair the index if a table rebuild dropped its triggers."""
    from django.db import connections

    ensure_sqlite_fts(connections[using])
