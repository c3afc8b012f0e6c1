"""Anonymous registration (docs/mcp.md): MCP clients register without a credential under an admin's profile.

- ``anonymous_requester`` — the enabled ``AnonymousProfile`` of the IdP connection the registration targets (the
  one its endpoint names, ``/oauth2/idp/<name>/register``, else the default connection) as the credential: its
  owner and team answer for the clients, its scopes and lifetime are the ceiling, its rules go to the policy.
  No enabled profile: 401, as before.
- ``software_identity`` — who the software is: ``software_id`` when present, else client name + redirect URIs +
  auth method + key thumbprints (hashed). Per-software rate limits and the DCR-debt view group by it.
- Coalescing — a registration identical in effect (same profile and owner, same software identity, the same
  accepted metadata) to a live one inside the profile's window returns that one (``coalesce_find`` /
  ``coalesce_reuse``): RFC 7591 201 with its information and a fresh registration access token, audited as
  ``registration.coalesced``. Two identical registrations at once: the key's lock (a PostgreSQL advisory lock;
  SQLite's write transactions are serialised already) lets the second find the first's.

A refused anonymous registration writes no request row and no event of its own (anyone can send one): it is
answered with the RFC 7591 error and counted per source and minute like a refused credential
(``approvals.unauthorized``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F

from approvals.choices import RequestState
from approvals.metadata import ClientMetadata
from approvals.models import AnonymousProfile, RegistrationRequest
from approvals.oauth2.cache import cached, default_idp
from approvals.oauth2.errors import BadRequest, Unauthorized
from approvals.oauth2.rat import SPENT_KEPT, rat_issue, rat_issue_fields
from approvals.policy_anonymous import AnonymousRules
from inventory.choices import LIVE_STATES, ClientState, CreatedVia
from inventory.keys import jwks_thumbprints
from inventory.models import IdPConnection
from portal.audit import Actor, audit_append, audit_event, event_insert, event_inserted
from portal.models import AuditEvent
from portal.rawsql import ModelColumns, fetch_one


class AnonymousRefusal(BadRequest):
    """A refused anonymous registration: answered, counted, not recorded as a request (module docstring)."""


def anonymous_profile(idp: IdPConnection | None = None) -> AnonymousProfile | None:
    """The enabled profile of the IdP connection the registration targets (``idp``: its per-IdP endpoint), else
    of the default one, with its owner and team."""
    idp = idp or default_idp()
    if idp is None:
        return None
    idp_id = idp.pk
    # Every anonymous registration reads it: kept per process (approvals.oauth2.cache: emptied on a save of the
    # profile, its IdP, owner or team), so neither the query nor its ORM compilation is paid per request.
    return cached(
        f"anonymous_profile:{idp_id}",
        lambda: (
            AnonymousProfile.objects.select_related("owner", "team", "idp")
            .defer("idp__secrets", "owner__password")  # intake never needs them (nor their decryption)
            .filter(idp_id=idp_id, enabled=True, idp__enabled=True)
            .first()
        ),
    )


def anonymous_rules(profile: AnonymousProfile) -> AnonymousRules:
    return AnonymousRules(
        profile=profile.name,
        allow_loopback=profile.allow_loopback,
        redirect_domains=tuple(profile.redirect_domains or ()),
        application_types=tuple(profile.application_types or ("native", "web")),
    )


def anonymous_requester(profile: AnonymousProfile | None):
    """The Requester of an anonymous registration; Unauthorized when anonymous registration is off."""
    from approvals.oauth2.credentials import Requester

    if profile is None:
        raise Unauthorized(
            "an initial access token (Authorization: Bearer) or a software_statement is required "
            "(anonymous registration is not enabled here)"
        )
    return Requester(
        via=CreatedVia.ANONYMOUS,
        owner=profile.owner,
        team=profile.team,
        purpose=profile.purpose,
        idp=profile.idp,
        profile=profile,
        actor=Actor.agent(f"anonymous ({profile.name})", f"profile:{profile.pk}"),
        ceiling_scopes=frozenset(profile.allowed_scopes or ()),
        ceiling_ttl=profile.max_ttl_seconds,
        ceiling_internal_only=False,
        internal_only_default=profile.internal_only,
        owner_live_limit=profile.max_live_clients,
        audit_fields={"profile_id": profile.pk, "profile": profile.name},
    )


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def software_identity(
    *,
    software_id: str | None,
    client_name: str | None = None,
    redirect_uris: Any = (),
    auth_method: str | None = None,
    thumbprints: Any = (),
) -> str:
    """One software's identity, hashed: its ``software_id``, else what makes it recognisable."""
    if software_id:
        return _digest("software_id", software_id)
    uris = sorted(u for u in redirect_uris if isinstance(u, str)) if isinstance(redirect_uris, list | tuple) else []
    return _digest("shape", client_name or "", uris, auth_method or "", sorted(thumbprints))


def metadata_identity(md: ClientMetadata) -> str:
    return software_identity(
        software_id=md.software_id,
        client_name=md.client_name,
        redirect_uris=md.redirect_uris,
        auth_method=md.token_endpoint_auth_method,
        thumbprints=jwks_thumbprints(md.jwks) if md.jwks else (md.jwks_uri or "",),
    )


def body_identity(body: Any) -> str:
    """The identity from an unvalidated body, for the rate limit that runs before validation."""
    body = body if isinstance(body, dict) else {}
    text = {k: body.get(k) if isinstance(body.get(k), str) else None for k in ("software_id", "client_name")}
    method = body.get("token_endpoint_auth_method")
    return software_identity(
        software_id=text["software_id"],
        client_name=text["client_name"],
        redirect_uris=body.get("redirect_uris") or (),
        auth_method=method if isinstance(method, str) else None,
    )


def coalesce_key(*, profile: AnonymousProfile, owner_id: int, identity: str, md: ClientMetadata) -> str:
    """Identical in effect: same profile and owner, same software, the same accepted metadata."""
    return _digest("coalesce", profile.pk, owner_id, identity, md.to_response_dict())


def coalesce_lock(key: str) -> None:
    """Serialise registrations with one key until the transaction ends (PostgreSQL; SQLite writers are serial)."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(key[:15], 16)])


class _CoalesceLookup:
    """The live registration a coalescing key names, with its client and the client's IdP: one hand-written query
    (``portal.rawsql``) on the ``request_coalesce_idx`` index. Every coalesced registration runs it, and the ORM's
    compilation of the same select_related query cost more than the rest of the coalesced path."""

    def __init__(self) -> None:
        from inventory.models import Client, IdPConnection

        self.request = ModelColumns(
            RegistrationRequest, "r", defer=["metadata", "verdict", "fetched_jwks", "cimd_document"]
        )
        self.client = ModelColumns(Client, "c")
        self.idp = ModelColumns(IdPConnection, "i", defer=["secrets"])  # never decrypted here
        self._sql: dict[str, str] = {}

    def sql(self, connection) -> str:
        sql = self._sql.get(connection.alias)
        if sql is None:
            from inventory.models import Client, IdPConnection

            qn = connection.ops.quote_name
            R, C, Idp = RegistrationRequest, Client, IdPConnection

            def col(model, name: str) -> str:
                return qn(model._meta.get_field(name).column)

            columns = ", ".join(c.select(connection) for c in (self.request, self.client, self.idp))
            live = ", ".join(f"'{state}'" for state in (ClientState.ACTIVE, ClientState.PROVISIONING))  # constants
            # Identifiers come from _meta (quoted) and the states are constants; values are parameters.
            sql = (
                f"SELECT {columns} FROM {qn(R._meta.db_table)} r "  # noqa: S608
                f"LEFT JOIN {qn(C._meta.db_table)} c ON c.{qn(C._meta.pk.column)} = r.{col(R, 'client')} "
                f"LEFT JOIN {qn(Idp._meta.db_table)} i ON i.{qn(Idp._meta.pk.column)} = c.{col(C, 'idp')} "
                f"WHERE r.{col(R, 'coalesce_key')} = %s "
                f"AND (r.{col(R, 'created_at')} >= %s OR r.{col(R, 'last_coalesced_at')} >= %s) "
                f"AND ((r.{col(R, 'state')} = '{RequestState.PENDING}' AND r.{col(R, 'client')} IS NULL) "
                f"OR (r.{col(R, 'state')} = '{RequestState.APPROVED}' AND c.{col(C, 'state')} IN ({live}) "
                f"AND c.{col(C, 'expires_at')} > %s)) "
                f"ORDER BY r.{qn(R._meta.pk.column)} DESC LIMIT 1"
            )
            self._sql[connection.alias] = sql
        return sql

    def with_live_count_sql(self, connection) -> str:
        """PostgreSQL: the same lookup as an outer join from one row, led by the owner's live clients (params:
        owner id, then the lookup's): one round trip answers both what the policy counts and what coalesces."""
        key = f"{connection.alias}:live"
        sql = self._sql.get(key)
        if sql is None:
            from inventory.models import Client

            qn = connection.ops.quote_name
            find = self.sql(connection)
            select, rest = find.split(" FROM ", 1)
            tables, where = rest.split(" WHERE ", 1)
            condition, order = where.split(" ORDER BY ", 1)
            live = ", ".join(f"'{state}'" for state in sorted(LIVE_STATES))  # constants, not input
            count = (
                f"(SELECT COUNT(*) FROM {qn(Client._meta.db_table)} o "  # noqa: S608
                f"WHERE o.{qn(Client._meta.get_field('owner').column)} = %s AND o.{qn('state')} IN ({live}))"
            )
            sql = f"{select}, {count} FROM (SELECT 1) one LEFT JOIN ({tables}) ON {condition} ORDER BY {order}"
            self._sql[key] = sql
        return sql

    def with_live_count(
        self, key: str, cut: datetime, now: datetime, owner_id: int
    ) -> tuple[RegistrationRequest | None, int]:
        connection = transaction.get_connection()
        row = fetch_one(self.with_live_count_sql(connection), [owner_id, key, cut, cut, now], using=connection.alias)
        assert row is not None  # an outer join from one row
        return self._load(row, connection), int(row[-1])

    def __call__(self, key: str, cut: datetime, now: datetime) -> RegistrationRequest | None:
        connection = transaction.get_connection()
        row = fetch_one(self.sql(connection), [key, cut, cut, now], using=connection.alias)
        if row is None:
            return None
        return self._load(row, connection)

    def _load(self, row: tuple, connection) -> RegistrationRequest | None:
        from inventory.models import Client, IdPConnection

        reg_request = self.request.load(row, 0, connection)
        if reg_request is None:
            return None
        client = self.client.load(row, len(self.request), connection)
        assert isinstance(reg_request, RegistrationRequest)  # the row is the request's
        if isinstance(client, Client):
            idp = self.idp.load(row, len(self.request) + len(self.client), connection)
            assert isinstance(idp, IdPConnection)  # a client always has its IdP
            client.idp = idp
            reg_request.client = client
        else:
            reg_request.client = None
        return reg_request


_coalesce_lookup = _CoalesceLookup()


def coalesce_find(*, key: str, window_seconds: int, now: datetime) -> RegistrationRequest | None:
    """The live registration ``key`` coalesces into: pending, or with an active (or provisioning) client that has
    not expired, registered (or last handed out) inside the window."""
    return _coalesce_lookup(key, now - timedelta(seconds=window_seconds), now)


def _coalesced_event(existing: RegistrationRequest, actor: Actor, source_ip: str | None):
    return audit_event(
        actor=actor,
        action="registration.coalesced",
        object_type="registration_request",
        object_id=existing.public_id,
        after={
            "client": existing.client.registration_id if existing.client is not None else None,
            "state": existing.state,
            "coalesced_count": existing.coalesced_count,
            "software_identity": existing.software_identity,
            "source_ip": source_ip,
        },
        reason="identical in effect to a live registration of the same software: returned it instead of a new one",
        policy_version=existing.policy_version,
    )


def coalesce_find_with_live_count(
    *, key: str, window_seconds: int, now: datetime, owner_id: int
) -> tuple[RegistrationRequest | None, int]:
    """PostgreSQL: :func:`coalesce_find` and the owner's live clients (for the policy) in one statement."""
    return _coalesce_lookup.with_live_count(key, now - timedelta(seconds=window_seconds), now, owner_id)


def coalesce_reuse(*, existing: RegistrationRequest, actor: Actor, source_ip: str | None, now: datetime) -> str:
    """Hand ``existing`` out again: a fresh registration access token, the count, one audit event. In the
    caller's transaction (under the key's lock)."""
    plaintext = rat_issue(existing, also={"coalesced_count": F("coalesced_count") + 1, "last_coalesced_at": now})
    existing.coalesced_count += 1
    existing.last_coalesced_at = now
    audit_append(_coalesced_event(existing, actor, source_ip))
    return plaintext


def _reuse_update_sql(connection) -> str:
    """The coalesced reuse as one UPDATE of the row as it is when the statement gets it (READ COMMITTED
    re-reads a row a concurrent reuse changed): the new token becomes the only one and the previous one joins
    the spent ones — as ``rat.rat_issue_fields`` computes them, but from the row's own columns, so a reuse
    that ran meanwhile is built upon, not a reason to start over. Nothing when the token was revoked (an ended
    registration, a detected reuse): the caller then takes the locked path, which reads it again."""
    qn = connection.ops.quote_name

    concrete = {f.name: f for f in RegistrationRequest._meta.concrete_fields}

    def col(name: str) -> str:
        return qn(concrete[name].column)

    count, previous, spent = col("coalesced_count"), col("rat_previous_hash"), col("rat_spent_hashes")
    # _spent(): the spent hashes and the previous one, empty ones dropped, the last SPENT_KEPT kept, in order.
    spent_sql = (  # identifiers from _meta (quoted), SPENT_KEPT an int
        "(SELECT COALESCE(jsonb_agg(s.h ORDER BY s.n), '[]'::jsonb) FROM ("  # noqa: S608
        "SELECT a.h, row_number() OVER (ORDER BY a.i) AS n, count(*) OVER () AS total "
        f"FROM jsonb_array_elements_text(COALESCE({spent}, '[]'::jsonb) || "
        f"CASE WHEN COALESCE({previous}, '') <> '' THEN jsonb_build_array({previous}) ELSE '[]'::jsonb END) "
        "WITH ORDINALITY AS a(h, i) WHERE a.h <> '') s "
        f"WHERE s.n > s.total - {int(SPENT_KEPT)})"
    )
    # Identifiers from _meta (quoted); every value is a parameter.
    return (
        f"UPDATE {qn(RegistrationRequest._meta.db_table)} SET {spent} = {spent_sql}, "  # noqa: S608
        f"{col('registration_access_token_hash')} = %s, {previous} = '', {col('rat_previous_until')} = NULL, "
        f"{count} = {count} + 1, {col('last_coalesced_at')} = %s "
        f"WHERE {qn(RegistrationRequest._meta.pk.column)} = %s "
        f"AND {col('registration_access_token_hash')} IS NOT NULL "
        f"RETURNING {count} AS c, {spent} AS spent, jsonb_set(%s::jsonb, '{{coalesced_count}}', to_jsonb({count})) AS after"
    )


def coalesce_reuse_at_once(
    *, existing: RegistrationRequest, actor: Actor, source_ip: str | None, now: datetime
) -> str | None:
    """PostgreSQL, without the key's lock or a transaction of its own: :func:`coalesce_reuse` as one statement
    (the token UPDATE and the audit event INSERT as a data-modifying CTE). Concurrent reuses of the same
    registration queue on its row and each builds on the one before (``_reuse_update_sql``); the event says
    the count the UPDATE made. None when the registration's token was revoked meanwhile (ended, or a detected
    reuse): the caller then takes the locked path, which reads it again."""
    connection = transaction.get_connection()
    plaintext, fields = rat_issue_fields(existing)
    token_hash = fields["registration_access_token_hash"]
    event = _coalesced_event(existing, actor, source_ip)
    # the event's "after" goes through the UPDATE, which sets the count it made (RETURNING)
    after = AuditEvent._meta.get_field("after").get_db_prep_save(event.after, connection)
    sql, all_params = event_insert(
        connection,
        event,
        ctes=[("upd", _reuse_update_sql(connection), [token_hash, now, existing.pk, after])],
        expressions={"after": "upd.after"},
        source="upd",
        returning=["(SELECT c FROM upd)", "(SELECT spent FROM upd)"],
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, all_params)
        row = cursor.fetchone()
    if row is None:
        return None
    event_inserted(event, row, using=connection.alias)
    coalesced_count, spent = row[1], row[2]
    if isinstance(spent, str):
        spent = json.loads(spent)
    if isinstance(event.after, dict):
        event.after["coalesced_count"] = coalesced_count
    existing.registration_access_token_hash = token_hash
    existing.rat_previous_hash = ""
    existing.rat_previous_until = None
    existing.rat_spent_hashes = spent
    existing.coalesced_count = coalesced_count
    existing.last_coalesced_at = now
    return plaintext
