"""The audit log is append-only in the database, on PostgreSQL and SQLite alike.

Events: DELETE is refused, and so is every UPDATE except the sequencer's one-time setting of ``log_index``
(from NULL to a value, nothing else changed). Checkpoints: no UPDATE, no DELETE. Tiles: an UPDATE may only
append hashes to a tile, never change the ones it has; no DELETE.

This migration comes after every schema change to those tables on purpose: on SQLite, altering a table
rebuilds it and drops its triggers (which is how the triggers of 0002 were lost when 0004 rebuilt the
audit table). tests/portal/test_tlog_guard.py lists the triggers after a full migrate on both engines.
TRUNCATE stays possible on PostgreSQL so a test database can be flushed; it needs table-owner rights that
the application role should not have in production (docs/audit-log.md).
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION registrar_audit_immutable() RETURNS trigger AS $$
DECLARE
    probe portal_auditevent;
BEGIN
    -- the sequencer's one-time assignment of the log index, with every other column unchanged (compared as
    -- whole rows, so a column added later is covered without touching this function)
    IF TG_OP = 'UPDATE' AND OLD.log_index IS NULL AND NEW.log_index IS NOT NULL THEN
        probe := NEW;
        probe.log_index := NULL;
        IF probe IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_immutable ON portal_auditevent;
CREATE TRIGGER audit_immutable BEFORE UPDATE OR DELETE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION registrar_audit_immutable();

CREATE OR REPLACE FUNCTION registrar_log_checkpoint_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'log checkpoints are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER log_checkpoint_immutable BEFORE UPDATE OR DELETE ON portal_logcheckpoint
    FOR EACH ROW EXECUTE FUNCTION registrar_log_checkpoint_immutable();

CREATE OR REPLACE FUNCTION registrar_log_tile_grows() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.level = OLD.level AND NEW.tile_index = OLD.tile_index
       AND length(NEW.hashes) > length(OLD.hashes)
       AND substring(NEW.hashes FROM 1 FOR length(OLD.hashes)) = OLD.hashes THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'log tiles only grow (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER log_tile_grows BEFORE UPDATE OR DELETE ON portal_logtile
    FOR EACH ROW EXECUTE FUNCTION registrar_log_tile_grows();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS log_tile_grows ON portal_logtile;
DROP FUNCTION IF EXISTS registrar_log_tile_grows();
DROP TRIGGER IF EXISTS log_checkpoint_immutable ON portal_logcheckpoint;
DROP FUNCTION IF EXISTS registrar_log_checkpoint_immutable();
CREATE OR REPLACE FUNCTION registrar_audit_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""
SQLITE_TRIGGERS = ("audit_no_update", "audit_no_delete", "log_checkpoint_no_update", "log_checkpoint_no_delete",
                   "log_tile_grows", "log_tile_no_delete")


def _abort(message: str) -> str:
    return f"BEGIN SELECT RAISE(ABORT, '{message}'); END;"


def sqlite_statements(apps) -> list[str]:
    # Every column but log_index must keep its value: listed from the model as it stands at this migration.
    event = apps.get_model("portal", "AuditEvent")
    columns = [f.column for f in event._meta.concrete_fields if f.column != "log_index"]
    changed = " OR ".join(f'NEW."{c}" IS NOT OLD."{c}"' for c in columns)
    return [
        'CREATE TRIGGER audit_no_update BEFORE UPDATE ON portal_auditevent '
        f"WHEN OLD.log_index IS NOT NULL OR NEW.log_index IS NULL OR {changed} "
        + _abort("audit events are append-only (UPDATE refused)"),
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON portal_auditevent "
        + _abort("audit events are append-only (DELETE refused)"),
        "CREATE TRIGGER log_checkpoint_no_update BEFORE UPDATE ON portal_logcheckpoint "
        + _abort("log checkpoints are append-only (UPDATE refused)"),
        "CREATE TRIGGER log_checkpoint_no_delete BEFORE DELETE ON portal_logcheckpoint "
        + _abort("log checkpoints are append-only (DELETE refused)"),
        "CREATE TRIGGER log_tile_grows BEFORE UPDATE ON portal_logtile "
        "WHEN NEW.level IS NOT OLD.level OR NEW.tile_index IS NOT OLD.tile_index "
        "OR length(NEW.hashes) <= length(OLD.hashes) OR substr(NEW.hashes, 1, length(OLD.hashes)) IS NOT OLD.hashes "
        + _abort("log tiles only grow (UPDATE refused)"),
        "CREATE TRIGGER log_tile_no_delete BEFORE DELETE ON portal_logtile "
        + _abort("log tiles only grow (DELETE refused)"),
    ]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
        for statement in sqlite_statements(apps):
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("portal", "0008_api_token_rights")]
    operations = [migrations.RunPython(forward, backward)]
