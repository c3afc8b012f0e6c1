"""Client columns the database keeps true, so the framework report counts failures instead of evaluating rules.

``uncatalogued_scopes``: the client holds a scope that is not an active entry of the catalogue.
``outside_parent``: a spawned client holds a scope its parent lacks, or outlives it.

Triggers compute both whenever a client's scopes, expiry or parent change (or anything writes the columns
themselves: a stale instance saved whole cannot put an old value back), a parent's change reaches its children,
and a catalogue change re-marks the clients holding the scope it names. No code writes them; the report counts
the live clients they mark from small partial indexes (``inventory.models.Client.Meta.indexes``), and
``manage.py reconcile_counts`` compares them with a recomputation. ``two_person_approved``, kept the same way
from the approvals, is approvals' (its migration ``0022``).

Changing the catalogue (adding a scope, renaming one, switching one off) looks for the clients holding it: one
scan of the client table, a few seconds at 10M clients — a rare administrative change, not a request path.

SQLite drops a table's triggers when a migration rebuilds it: a migration that rebuilds ``inventory_client``
must install these again (as for ``inventory.count_triggers``).
"""

from __future__ import annotations

# ruff: noqa: S608 - every statement here is built from this module's constants, never from input

# --- PostgreSQL -------------------------------------------------------------------------------------------------

_PG_CATALOGUE = "(SELECT COALESCE(jsonb_agg(name), '[]'::jsonb) FROM inventory_scopedefinition WHERE is_active)"


def _pg_outside(child: str, parent: str) -> str:
    return (
        f"COALESCE(NOT (COALESCE({child}.scopes, '[]'::jsonb) <@ COALESCE({parent}.scopes, '[]'::jsonb)) "
        f"OR ({child}.expires_at IS NULL AND {parent}.expires_at IS NOT NULL) "
        f"OR {child}.expires_at > {parent}.expires_at, false)"
    )


_PG_FORWARD = [
    f"""CREATE OR REPLACE FUNCTION registrar_client_flags() RETURNS trigger AS $$
DECLARE p RECORD;
BEGIN
    NEW.uncatalogued_scopes := NOT (COALESCE(NEW.scopes, '[]'::jsonb) <@ {_PG_CATALOGUE});
    IF NEW.parent_id IS NULL THEN
        NEW.outside_parent := false;
    ELSE
        SELECT * INTO p FROM inventory_client WHERE id = NEW.parent_id;
        NEW.outside_parent := {_pg_outside("NEW", "p")};
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS client_flags ON inventory_client",
    "CREATE TRIGGER client_flags BEFORE INSERT OR UPDATE OF scopes, expires_at, parent_id, uncatalogued_scopes, "
    "outside_parent ON inventory_client FOR EACH ROW EXECUTE FUNCTION registrar_client_flags()",
    f"""CREATE OR REPLACE FUNCTION registrar_client_children_flags() RETURNS trigger AS $$
BEGIN
    UPDATE inventory_client c SET outside_parent = {_pg_outside("c", "NEW")}
    WHERE c.parent_id = NEW.id AND c.outside_parent IS DISTINCT FROM {_pg_outside("c", "NEW")};
    RETURN NULL;
END;
$$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS client_children_flags ON inventory_client",
    "CREATE TRIGGER client_children_flags AFTER UPDATE OF scopes, expires_at ON inventory_client FOR EACH ROW "
    "WHEN (OLD.scopes IS DISTINCT FROM NEW.scopes OR OLD.expires_at IS DISTINCT FROM NEW.expires_at) "
    "EXECUTE FUNCTION registrar_client_children_flags()",
    """CREATE OR REPLACE FUNCTION registrar_catalogue_flags() RETURNS trigger AS $$
DECLARE names jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        names := jsonb_build_array(NEW.name);
    ELSIF TG_OP = 'DELETE' THEN
        names := jsonb_build_array(OLD.name);
    ELSE
        names := jsonb_build_array(OLD.name, NEW.name);
    END IF;
    -- the client trigger recomputes the flag from the catalogue as it now is
    UPDATE inventory_client SET uncatalogued_scopes = uncatalogued_scopes WHERE scopes ?| ARRAY(
        SELECT jsonb_array_elements_text(names));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS catalogue_flags ON inventory_scopedefinition",
    "CREATE TRIGGER catalogue_flags AFTER INSERT OR DELETE ON inventory_scopedefinition FOR EACH ROW "
    "EXECUTE FUNCTION registrar_catalogue_flags()",
    "DROP TRIGGER IF EXISTS catalogue_flags_update ON inventory_scopedefinition",
    "CREATE TRIGGER catalogue_flags_update AFTER UPDATE ON inventory_scopedefinition FOR EACH ROW "
    "WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.is_active IS DISTINCT FROM NEW.is_active) "
    "EXECUTE FUNCTION registrar_catalogue_flags()",
]
_PG_BACKWARD = [
    "DROP TRIGGER IF EXISTS catalogue_flags_update ON inventory_scopedefinition",
    "DROP TRIGGER IF EXISTS catalogue_flags ON inventory_scopedefinition",
    "DROP FUNCTION IF EXISTS registrar_catalogue_flags()",
    "DROP TRIGGER IF EXISTS client_children_flags ON inventory_client",
    "DROP FUNCTION IF EXISTS registrar_client_children_flags()",
    "DROP TRIGGER IF EXISTS client_flags ON inventory_client",
    "DROP FUNCTION IF EXISTS registrar_client_flags()",
]

# --- SQLite (no BEFORE-trigger assignment: the row is updated right after it is written) -------------------------

_SQLITE_UNCATALOGUED = (
    "EXISTS (SELECT 1 FROM json_each(inventory_client.scopes) j "
    "WHERE j.value NOT IN (SELECT name FROM inventory_scopedefinition WHERE is_active))"
)
_SQLITE_OUTSIDE = (
    "COALESCE((SELECT EXISTS (SELECT 1 FROM json_each(inventory_client.scopes) j "
    "WHERE j.value NOT IN (SELECT value FROM json_each(p.scopes))) "
    "OR (inventory_client.expires_at IS NULL AND p.expires_at IS NOT NULL) "
    "OR inventory_client.expires_at > p.expires_at "
    "FROM inventory_client p WHERE p.id = inventory_client.parent_id), 0)"
)
_SQLITE_SELF = (
    f"UPDATE inventory_client SET uncatalogued_scopes = {_SQLITE_UNCATALOGUED}, "
    f"outside_parent = {_SQLITE_OUTSIDE} WHERE id = NEW.id"
)
_SQLITE_NAMED = "SELECT 1 FROM json_each(inventory_client.scopes) j WHERE j.value IN ({names})"

_SQLITE_FORWARD = [
    f"CREATE TRIGGER client_flags_insert AFTER INSERT ON inventory_client BEGIN {_SQLITE_SELF}; END",
    # recursive triggers are off: the updates below do not fire this trigger again
    "CREATE TRIGGER client_flags_update AFTER UPDATE OF scopes, expires_at, parent_id, uncatalogued_scopes, "
    f"outside_parent ON inventory_client BEGIN {_SQLITE_SELF}; "
    f"UPDATE inventory_client SET outside_parent = {_SQLITE_OUTSIDE} WHERE parent_id = NEW.id; END",
    "CREATE TRIGGER catalogue_flags_insert AFTER INSERT ON inventory_scopedefinition BEGIN "
    f"UPDATE inventory_client SET uncatalogued_scopes = {_SQLITE_UNCATALOGUED} "
    f"WHERE EXISTS ({_SQLITE_NAMED.format(names='NEW.name')}); END",
    "CREATE TRIGGER catalogue_flags_delete AFTER DELETE ON inventory_scopedefinition BEGIN "
    f"UPDATE inventory_client SET uncatalogued_scopes = {_SQLITE_UNCATALOGUED} "
    f"WHERE EXISTS ({_SQLITE_NAMED.format(names='OLD.name')}); END",
    "CREATE TRIGGER catalogue_flags_update AFTER UPDATE OF name, is_active ON inventory_scopedefinition BEGIN "
    f"UPDATE inventory_client SET uncatalogued_scopes = {_SQLITE_UNCATALOGUED} "
    f"WHERE EXISTS ({_SQLITE_NAMED.format(names='OLD.name, NEW.name')}); END",
]
_SQLITE_TRIGGERS = (
    "client_flags_insert",
    "client_flags_update",
    "catalogue_flags_insert",
    "catalogue_flags_delete",
    "catalogue_flags_update",
)
_SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_TRIGGERS]

# The flags recomputed from the rows (a migration's backfill; reconcile_counts' check), per engine.
RECOMPUTE = {
    "postgresql": (
        f"NOT (COALESCE(inventory_client.scopes, '[]'::jsonb) <@ {_PG_CATALOGUE})",
        "COALESCE((SELECT "
        + _pg_outside("inventory_client", "p")
        + " FROM inventory_client p WHERE p.id = inventory_client.parent_id), false)",
    ),
    "sqlite": (_SQLITE_UNCATALOGUED, _SQLITE_OUTSIDE),
}


def install(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": _PG_FORWARD, "sqlite": [*_SQLITE_BACKWARD, *_SQLITE_FORWARD]}.get(vendor, []):
        schema_editor.execute(statement)


def uninstall(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": _PG_BACKWARD, "sqlite": _SQLITE_BACKWARD}.get(vendor, []):
        schema_editor.execute(statement)


def recompute_sql(vendor: str) -> str:
    """One UPDATE setting both flags from the rows, touching only the rows whose flags are wrong."""
    uncatalogued, outside = RECOMPUTE[vendor]
    return (
        f"UPDATE inventory_client SET uncatalogued_scopes = {uncatalogued}, outside_parent = {outside} "
        f"WHERE uncatalogued_scopes IS NULL OR outside_parent IS NULL "
        f"OR uncatalogued_scopes <> ({uncatalogued}) OR outside_parent <> ({outside})"
    )


def drift_sql(vendor: str) -> str:
    """How many clients' flags differ from a recomputation (0 when the triggers have kept them)."""
    uncatalogued, outside = RECOMPUTE[vendor]
    return (
        "SELECT COUNT(*) FROM inventory_client WHERE uncatalogued_scopes IS NULL OR outside_parent IS NULL "
        f"OR uncatalogued_scopes <> ({uncatalogued}) OR outside_parent <> ({outside})"
    )


def trigger_names(vendor: str) -> set[str]:
    if vendor == "postgresql":
        return {"client_flags", "client_children_flags", "catalogue_flags", "catalogue_flags_update"}
    return set(_SQLITE_TRIGGERS)
