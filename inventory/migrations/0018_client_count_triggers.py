"""Counts kept as clients change: a trigger on the client table writes count deltas in the same transaction.

Every path that creates, changes or deletes a client (the lifecycle services, bulk sweeps, outbox and
reconciliation flags, admin, SCIM, seeds, raw SQL) crosses the table, so the counts cannot miss one; the
trigger only INSERTs (a -1 row for the old signature, a +1 row for the new one) and only when a counted
column changed, so writers never wait for each other on a counter row. ``inventory.counts`` folds the deltas.

Like portal's audit triggers this migration must come after every schema change to ``inventory_client``: on
SQLite, altering a table rebuilds it and drops its triggers. A later migration that alters the client table
re-runs ``SQLITE_FORWARD`` (tests/inventory/test_counts.py lists the triggers after a full migrate).
"""

from django.db import migrations

# (delta column, expression over the row R)
SIGNATURE = (
    ("state", "R.state"),
    ("risk_tier", "R.risk_tier"),
    ("team_id", "COALESCE(R.team_id, 0)"),
    ("idp_id", "R.idp_id"),
    ("owner_id", "COALESCE(R.owner_id, 0)"),
    ("created_via", "R.created_via"),
    ("depth", "R.depth"),
    ("auth_method", "R.auth_method"),
    ("managed", "R.managed"),
    ("orphaned", "R.orphaned_at IS NOT NULL"),
    ("stale", "R.stale_at IS NOT NULL"),
    ("sync_failed", "R.sync_failed"),
    ("drifted", "R.drift IS NOT NULL"),
    ("no_purpose", "R.purpose = ''"),
    ("created_at", "R.created_at"),
    ("ended_at", "R.ended_at"),
    ("expires_at", "R.expires_at"),
)
# What the UPDATE trigger compares: the columns the signature reads.
WATCHED = (
    "state",
    "risk_tier",
    "team_id",
    "idp_id",
    "owner_id",
    "created_via",
    "depth",
    "auth_method",
    "managed",
    "orphaned_at IS NULL",
    "stale_at IS NULL",
    "sync_failed",
    "drift IS NULL",
    "purpose = ''",
    "created_at",
    "ended_at",
    "expires_at",
)
COLUMNS = "n, " + ", ".join(name for name, _ in SIGNATURE)


def _values(sign: int, record: str) -> str:
    return f"({sign}, " + ", ".join(expr.replace("R.", f"{record}.") for _, expr in SIGNATURE) + ")"


def _changed(distinct: str) -> str:
    def side(record: str, column: str) -> str:
        if " " in column:  # an expression: prefix its column
            return f"({record}.{column})"
        return f"{record}.{column}"

    return " OR ".join(f"{side('OLD', c)} {distinct} {side('NEW', c)}" for c in WATCHED)


INSERT = "INSERT INTO inventory_clientcountdelta (" + COLUMNS + ") VALUES "  # noqa: S608 - constants

PG_FORWARD = f"""
CREATE OR REPLACE FUNCTION registrar_client_count_delta() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {INSERT}{_values(1, "NEW")};
    ELSIF TG_OP = 'DELETE' THEN
        {INSERT}{_values(-1, "OLD")};
    ELSE
        {INSERT}{_values(-1, "OLD")}, {_values(1, "NEW")};
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS client_count_delta ON inventory_client;
CREATE TRIGGER client_count_delta AFTER INSERT OR DELETE ON inventory_client
    FOR EACH ROW EXECUTE FUNCTION registrar_client_count_delta();
DROP TRIGGER IF EXISTS client_count_delta_update ON inventory_client;
CREATE TRIGGER client_count_delta_update AFTER UPDATE ON inventory_client
    FOR EACH ROW WHEN ({_changed("IS DISTINCT FROM")}) EXECUTE FUNCTION registrar_client_count_delta();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS client_count_delta_update ON inventory_client;
DROP TRIGGER IF EXISTS client_count_delta ON inventory_client;
DROP FUNCTION IF EXISTS registrar_client_count_delta();
"""
SQLITE_FORWARD = [
    "DROP TRIGGER IF EXISTS client_count_delta_insert",
    "DROP TRIGGER IF EXISTS client_count_delta_delete",
    "DROP TRIGGER IF EXISTS client_count_delta_update",
    f"CREATE TRIGGER client_count_delta_insert AFTER INSERT ON inventory_client BEGIN {INSERT}{_values(1, 'NEW')}; END",
    f"CREATE TRIGGER client_count_delta_delete AFTER DELETE ON inventory_client BEGIN {INSERT}{_values(-1, 'OLD')}; END",
    f"CREATE TRIGGER client_count_delta_update AFTER UPDATE ON inventory_client WHEN {_changed('IS NOT')} "
    f"BEGIN {INSERT}{_values(-1, 'OLD')}, {_values(1, 'NEW')}; END",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS client_count_delta_insert",
    "DROP TRIGGER IF EXISTS client_count_delta_delete",
    "DROP TRIGGER IF EXISTS client_count_delta_update",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)
    _backfill(schema_editor)


def _backfill(schema_editor):
    """Clients that existed before the triggers enter the counts as +1 deltas (folded like any other)."""
    select = ", ".join(expr.replace("R.", "c.") for _, expr in SIGNATURE)
    schema_editor.execute(
        f"INSERT INTO inventory_clientcountdelta ({COLUMNS}) SELECT 1, {select} FROM inventory_client c"  # noqa: S608
    )


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("inventory", "0017_client_counts")]

    operations = [migrations.RunPython(forward, backward)]
