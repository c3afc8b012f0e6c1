"""The database's side of append-only: which triggers must exist, and whether they do.

The triggers are created by the portal migration ``audit_log_append_only``; a later migration that rebuilds
one of these tables on SQLite drops them silently, so ``verify_audit`` and the framework report check here.
"""

from __future__ import annotations

from django.db import connections

EXPECTED = {
    "postgresql": {
        ("portal_auditevent", "audit_immutable"),
        ("portal_logcheckpoint", "log_checkpoint_immutable"),
        ("portal_logtile", "log_tile_grows"),
    },
    "sqlite": {
        ("portal_auditevent", "audit_no_update"),
        ("portal_auditevent", "audit_no_delete"),
        ("portal_logcheckpoint", "log_checkpoint_no_update"),
        ("portal_logcheckpoint", "log_checkpoint_no_delete"),
        ("portal_logtile", "log_tile_grows"),
        ("portal_logtile", "log_tile_no_delete"),
    },
}


def installed_triggers(using: str = "default") -> set[tuple[str, str]]:
    """(table, trigger) pairs on the log's tables, enabled ones only."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' "
                "AND c.relname IN ('portal_auditevent', 'portal_logcheckpoint', 'portal_logtile')"
            )
        elif connection.vendor == "sqlite":
            cursor.execute(
                "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('portal_auditevent', 'portal_logcheckpoint', 'portal_logtile')"
            )
        else:
            return set()
        return {(table, name) for table, name in cursor.fetchall()}


def missing_triggers(using: str = "default") -> set[tuple[str, str]]:
    vendor = connections[using].vendor
    return EXPECTED.get(vendor, set()) - installed_triggers(using)
