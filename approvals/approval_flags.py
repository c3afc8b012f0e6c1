"""``Client.two_person_approved``, kept true by the database from the approvals.

A client's registration carries two distinct human approvals when approve decisions by two or more people are
recorded on the request whose id is the client's ``registration_id``. Triggers set the flag when a decision is
recorded or removed and when a request is linked to its client (the client is created after the approvals, in
the transaction that then links it), so the framework report's "Human approval for high tier" control counts the
live high-tier clients without it from a partial index instead of looking up every client's decisions. No code
writes the flag; ``manage.py reconcile_counts`` compares it with :data:`RECOMPUTE`.

The triggers live on approvals' own tables (approvals is the layer above inventory and may write its clients).
"""

from __future__ import annotations

# ruff: noqa: S608 - every statement here is built from this module's constants, never from input

# The registration ids whose request carries approve decisions by two or more distinct people: the one rule,
# narrowed to one client's request where a trigger needs only that (``{where}``).
_APPROVED = (
    "SELECT r.public_id FROM approvals_decision d JOIN approvals_registrationrequest r ON r.id = d.request_id "
    "WHERE d.kind = 'approve'{where} GROUP BY r.public_id HAVING COUNT(DISTINCT d.approver_id) >= 2"
)
# one client's flag (inventory_client the row being set): a look-up of its own request's decisions
RECOMPUTE = "EXISTS (" + _APPROVED.format(where=" AND r.public_id = inventory_client.registration_id") + ")"
# every client's flag at once (a migration, seed_scale, reconcile_counts): the approved ids computed once
_RECOMPUTE_ALL = "(inventory_client.registration_id IN (" + _APPROVED.format(where="") + "))"
_SET = "UPDATE inventory_client SET two_person_approved = " + RECOMPUTE + " WHERE registration_id = {public_id}"

_PG_FORWARD = [
    f"""CREATE OR REPLACE FUNCTION registrar_two_person() RETURNS trigger AS $$
DECLARE pid varchar;
BEGIN
    IF TG_TABLE_NAME = 'approvals_registrationrequest' THEN
        pid := NEW.public_id;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT public_id INTO pid FROM approvals_registrationrequest WHERE id = OLD.request_id;
    ELSE
        SELECT public_id INTO pid FROM approvals_registrationrequest WHERE id = NEW.request_id;
    END IF;
    IF pid IS NOT NULL THEN
        {_SET.format(public_id="pid")} AND two_person_approved IS DISTINCT FROM {RECOMPUTE};
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS two_person_decision ON approvals_decision",
    "CREATE TRIGGER two_person_decision AFTER INSERT OR DELETE OR UPDATE OF kind, approver_id, request_id "
    "ON approvals_decision FOR EACH ROW EXECUTE FUNCTION registrar_two_person()",
    "DROP TRIGGER IF EXISTS two_person_request ON approvals_registrationrequest",
    "CREATE TRIGGER two_person_request AFTER INSERT OR UPDATE OF client_id ON approvals_registrationrequest "
    "FOR EACH ROW WHEN (NEW.client_id IS NOT NULL) EXECUTE FUNCTION registrar_two_person()",
]
_PG_BACKWARD = [
    "DROP TRIGGER IF EXISTS two_person_request ON approvals_registrationrequest",
    "DROP TRIGGER IF EXISTS two_person_decision ON approvals_decision",
    "DROP FUNCTION IF EXISTS registrar_two_person()",
]
_BY_REQUEST = "(SELECT public_id FROM approvals_registrationrequest WHERE id = {record}.request_id)"
_SQLITE_FORWARD = [
    "CREATE TRIGGER two_person_decision_insert AFTER INSERT ON approvals_decision BEGIN "
    f"{_SET.format(public_id=_BY_REQUEST.format(record='NEW'))}; END",
    "CREATE TRIGGER two_person_decision_delete AFTER DELETE ON approvals_decision BEGIN "
    f"{_SET.format(public_id=_BY_REQUEST.format(record='OLD'))}; END",
    "CREATE TRIGGER two_person_decision_update AFTER UPDATE OF kind, approver_id, request_id ON approvals_decision "
    f"BEGIN {_SET.format(public_id=_BY_REQUEST.format(record='OLD'))}; "
    f"{_SET.format(public_id=_BY_REQUEST.format(record='NEW'))}; END",
    "CREATE TRIGGER two_person_request_insert AFTER INSERT ON approvals_registrationrequest "
    f"WHEN NEW.client_id IS NOT NULL BEGIN {_SET.format(public_id='NEW.public_id')}; END",
    "CREATE TRIGGER two_person_request_update AFTER UPDATE OF client_id ON approvals_registrationrequest "
    f"WHEN NEW.client_id IS NOT NULL BEGIN {_SET.format(public_id='NEW.public_id')}; END",
]
_SQLITE_TRIGGERS = (
    "two_person_decision_insert",
    "two_person_decision_delete",
    "two_person_decision_update",
    "two_person_request_insert",
    "two_person_request_update",
)


def install(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    drops = [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_TRIGGERS]
    for statement in {"postgresql": _PG_FORWARD, "sqlite": [*drops, *_SQLITE_FORWARD]}.get(vendor, []):
        schema_editor.execute(statement)


def uninstall(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    drops = [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_TRIGGERS]
    for statement in {"postgresql": _PG_BACKWARD, "sqlite": drops}.get(vendor, []):
        schema_editor.execute(statement)


def recompute_sql() -> str:
    """One UPDATE setting the flag from the approvals, touching only the clients whose flag is wrong."""
    return (
        f"UPDATE inventory_client SET two_person_approved = {_RECOMPUTE_ALL} "
        f"WHERE two_person_approved IS NULL OR two_person_approved <> {_RECOMPUTE_ALL}"
    )


def drift_sql() -> str:
    return (
        "SELECT COUNT(*) FROM inventory_client WHERE two_person_approved IS NULL "
        f"OR two_person_approved <> {_RECOMPUTE_ALL}"
    )


def trigger_names(vendor: str) -> set[str]:
    if vendor == "postgresql":
        return {"two_person_decision", "two_person_request"}
    return set(_SQLITE_TRIGGERS)
