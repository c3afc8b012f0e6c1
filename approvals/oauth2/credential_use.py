"""The once-only writes a registration must win, and the statement that writes a registration with its event.

A credential allows something once: one use of an initial access token (``uses < max_uses``), one of a parent
client's child slots (``children_spawned < max_children_per_parent``), one registration per software statement
``jti``. Each is a conditional write that concurrent registrations cannot both win; this module is the one place
they are written (``insert_with_event`` for a pending or refused request, ``consume`` first in the transaction
of an auto-approved one). The request row and its audit event are written out once (``portal.rawsql``): on the
endpoint's hottest path the ORM spent more CPU compiling these statements than PostgreSQL spent running them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Field

from approvals.models import InitialAccessToken, RegistrationRequest, SoftwareStatementUse
from inventory.choices import ClientState
from inventory.models import Client
from portal.audit import audit_append, event_insert, event_inserted
from portal.models import AuditEvent
from portal.rawsql import InsertStatement

_REQUEST_INSERT = InsertStatement(RegistrationRequest)

Guard = tuple[str, str, list[Any]]  # (CTE name, conditional write, params)


def _token_use_sql(connection) -> str:
    """Consume one use of a live token (params: now, token id, now): conditional, so max_uses holds under any
    concurrency; no row changed means it ran out (or was revoked or expired) meanwhile."""
    qn = connection.ops.quote_name
    return (
        f"UPDATE {qn(InitialAccessToken._meta.db_table)} SET uses = uses + 1, last_used_at = %s "  # noqa: S608
        "WHERE id = %s AND uses < max_uses AND revoked_at IS NULL AND expires_at > %s"
    )


def _statement_use_sql(connection, use: SoftwareStatementUse) -> tuple[str, list[Any]]:
    """Record a statement's ``jti`` unless it is on record already: no row inserted means it was used (the
    unique constraint decides, so concurrent registrations with one statement cannot both get one)."""
    qn = connection.ops.quote_name
    meta = SoftwareStatementUse._meta
    fields = [_column(name) for name in ("issuer", "jti", "expires_at", "registration_id", "used_at")]
    columns = ", ".join(qn(f.column) for f in fields)
    conflict = ", ".join(qn(_column(name).column) for name in ("issuer", "jti"))
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
        f" ON CONFLICT ({conflict}) DO NOTHING"
    )
    return sql, [f.get_db_prep_save(getattr(use, f.attname), connection) for f in fields]


def _column(name: str) -> Field:
    field = SoftwareStatementUse._meta.get_field(name)
    assert isinstance(field, Field)  # a concrete column of the model, not a relation's reverse side
    return field


def _spawn_sql(connection) -> str:
    """Consume one of a parent's child slots (params: parent id, limit): conditional, like a token use, so
    ``max_children_per_parent`` holds under any concurrency; no row changed means the parent reached its limit,
    stopped being active or lost its spawn right meanwhile."""
    qn = connection.ops.quote_name
    return (
        f"UPDATE {qn(Client._meta.db_table)} SET children_spawned = children_spawned + 1 "  # noqa: S608
        f"WHERE id = %s AND children_spawned < %s AND state = '{ClientState.ACTIVE}' "
        "AND spawn_revoked_at IS NULL"
    )


@dataclass
class SpawnSlot:
    """A spawn's claim on its parent's child count: the parent and the limit in, the new count out."""

    parent_id: int
    limit: int
    count: int | None = None


def insert_with_event(
    reg_request: RegistrationRequest,
    event: AuditEvent,
    *,
    token_id: int | None,
    now,
    spawn: SpawnSlot | None = None,
    statement_use: SoftwareStatementUse | None = None,
) -> bool:
    """Write ``reg_request`` and its audit ``event``, consuming what its credential allows once: one use of token
    ``token_id``, one child slot of the ``spawn`` parent, or the software statement's ``jti``
    (``statement_use``); False (and nothing written) when the token ran out, the parent reached its limit or
    the ``jti`` was used meanwhile. This is the one place a use, a slot or a ``jti`` is consumed. (A
    registration has one credential, so the caller knows which it was.)

    On PostgreSQL it is one statement (the token or parent UPDATE, or the statement-use INSERT … ON CONFLICT
    DO NOTHING, then the request INSERT from the row that returned, as data-modifying CTEs, then the event
    INSERT, :func:`portal.audit.event_insert`): every agent of a fleet shares one token, and its row lock is
    then held for one statement and its commit, never across a round trip to Python. The event takes no lock
    at all (the sequencer places it in the log later). Elsewhere the same steps run in a transaction.
    """
    connection = transaction.get_connection()
    guard = credential_guard(connection, token_id, spawn, statement_use, now)  # (CTE name, conditional write, params)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            _REQUEST_INSERT.insert(reg_request)
            if guard is not None:
                with connection.cursor() as cursor:
                    cursor.execute(guard[1], guard[2])
                    if cursor.rowcount != 1:
                        transaction.set_rollback(True)
                        return False
            if spawn is not None:
                spawn.count = Client.objects.filter(pk=spawn.parent_id).values_list("children_spawned", flat=True)[0]
            audit_append(event)
        return True
    ctes = []
    if guard is not None:
        name, sql, params = guard
        ctes.append((name, sql + (" RETURNING id, children_spawned" if name == "par" else " RETURNING id"), params))
    insert, params = _REQUEST_INSERT.from_select(
        reg_request, connection, expressions={}, source=guard[0] if guard is not None else ""
    )
    ctes.append(("req", f"{insert} RETURNING id", params))
    returning = ["(SELECT id FROM req)"] + (["(SELECT children_spawned FROM par)"] if spawn is not None else [])
    sql, params = event_insert(connection, event, ctes=ctes, when="EXISTS (SELECT 1 FROM req)", returning=returning)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    event_inserted(event, row, using=connection.alias)
    reg_request.pk = row[1]
    reg_request._state.adding = False
    reg_request._state.db = connection.alias
    if spawn is not None:
        spawn.count = row[2]
    return True


def credential_guard(
    connection, token_id: int | None, spawn: SpawnSlot | None, statement_use: SoftwareStatementUse | None, now
) -> Guard | None:
    """The conditional write an accepted registration must win: the token's use, the parent's child slot, or the
    software statement's ``jti`` (an insert the unique constraint lets through once)."""
    if token_id is not None:
        return "tok", _token_use_sql(connection), [now, token_id, now]
    if spawn is not None:
        return "par", _spawn_sql(connection), [spawn.parent_id, spawn.limit]
    if statement_use is not None:
        sql, params = _statement_use_sql(connection, statement_use)
        return "stmt", sql, params
    return None


def consume(guard: Guard) -> bool:
    """Run a credential's once-only write (``credential_guard``) in the caller's transaction; False when it lost."""
    _name, sql, params = guard
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1
