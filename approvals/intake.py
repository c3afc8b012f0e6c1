"""Registration intake: RFC 7591 registration and RFC 7592 management, as services.

The views in ``approvals.oauth2`` parse HTTP and call these functions; everything that decides or writes
happens here.

Who may register (``requester_authenticate``), told apart by the bearer's prefix:

- ``Authorization: Bearer rat_…`` — an initial access token (RFC 7591 §3): owner, team, purpose, scope and
  TTL ceiling, internal-only flag and target IdP come from the token.
- ``Authorization: Bearer rrat_…`` — a parent client's registration access token: the registration spawns
  a child with the parent's owner, at most its scopes and remaining lifetime, one level deeper.
- no bearer, ``software_statement`` in the body — a JWT from a TrustedIssuer (``approvals.statements``).

What happens (``registration_submit``): the body is validated (``approvals.metadata``), the active policy
version judges it (``approvals.policy.evaluate``) and the outcome is recorded as a RegistrationRequest with
one audit event:

- refused → a ``refused`` request row and its audit event, nothing else. A refused attempt does NOT use up
  the initial access token: the token's owner sees the attempt, and an agent that fixes its metadata can
  try again. Only accepted and pending registrations consume a use.
- review → a ``pending`` request; approvers take it from there (``approvals.services``).
- auto-approve → an ``approved`` request and its client (``provisioning`` + outbox CREATE) in the same
  transaction; after commit the view calls ``_deliver_inline`` (the workers' delivery code) to create it at
  the IdP right away.

Token uses are consumed with one conditional UPDATE (``uses < max_uses``), so concurrent registrations can
never exceed ``max_uses``; the loser of a race gets 401 and nothing is written. A software statement's ``jti``
is recorded the same way (an INSERT that a unique constraint turns into nothing on a replay), so a statement
registers once; the loser of that race gets 400 ``invalid_software_statement``. A refused attempt uses
neither.

Keys: an inline ``jwks`` is checked by ``approvals.metadata`` (``inventory.keys``); the key set behind a
``jwks_uri`` is fetched here through ``portal.safefetch`` and checked by the same rules, at registration and on
every RFC 7592 update, outside any transaction. The client — and so the IdP — gets the vetted key set, never
the URI to fetch on its own; the request keeps it (``fetched_jwks``) for an approval days later.

The owner's live-client quota is judged twice: the policy sees the count read with the credential (a cheap
early refusal, recorded like any other), and an auto-approved registration is checked again inside the
transaction that creates its client, under the owner's row lock (``inventory.quotas``). A registration that
loses that race is refused by the same policy rule on the recounted figure (400 ``invalid_client_metadata``,
"the owner already has 50 live clients; the limit is 50") and, like every refusal, uses nothing up.

Registration access tokens (prefix ``rrat_``) are stored hashed on the request and rotated on every
RFC 7592 use; the new one is in the response and the old one stops working.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from approvals.choices import RequestKind, RequestState
from approvals.metadata import ClientMetadata, MetadataError, validate_client_metadata
from approvals.models import InitialAccessToken, RegistrationRequest, SoftwareStatementUse, TrustedIssuer
from approvals.policy import (
    OUTCOME_AUTO_APPROVE,
    OUTCOME_REFUSE,
    TIER_REFUSED,
    PolicyConfig,
    RegistrationContext,
    ScopeInfo,
    Verdict,
    evaluate,
)
from approvals.policy_store import active_policy
from approvals.services import DecisionConflict, request_client_create, request_withdraw_by_registrant
from approvals.statements import (
    StatementError,
    VerifiedStatement,
    merge_statement,
    replayed,
    verify_software_statement,
)
from approvals.unauthorized import ACTION_STATEMENT_REJECTED, ACTION_UNAUTHORIZED, unauthorized_count
from inventory.choices import LIVE_STATES, ClientState, CreatedVia, IdPKind, OutboxOperation
from inventory.keys import FetchedKeySet, KeySetError, jwks_fetch, jwks_thumbprints
from inventory.lifecycle import LifecycleError, client_snapshot, client_transition
from inventory.models import Client, IdPConnection, ScopeDefinition
from inventory.outbox import outbox_enqueue, outbox_nudge
from inventory.outbox.deliver import deliver_client_outbox_inline
from inventory.quotas import OwnerQuotaExceeded
from inventory.services import new_registration_id
from portal.audit import Actor, audit_append, audit_event, audit_record, event_insert, event_inserted
from portal.crypto import hash_token, new_token
from portal.logs import log_event
from portal.models import AuditEvent
from portal.rawsql import InsertStatement, ModelColumns, fetch_one

logger = logging.getLogger(__name__)

INITIAL_TOKEN_PREFIX = "rat_"
REGISTRATION_TOKEN_PREFIX = "rrat"  # new_token() adds the "_"

ERR_INVALID_TOKEN = "invalid_token"
ERR_INVALID_METADATA = "invalid_client_metadata"


# --- errors --------------------------------------------------------------------------------------


class IntakeError(Exception):
    """An answer other than success, with its HTTP status and RFC 7591/6750 error body."""

    status = 400

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}")

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class Unauthorized(IntakeError):
    """401: the bearer credential is missing, unknown, expired, used up or revoked (RFC 6750 §3.1)."""

    status = 401

    def __init__(self, description: str) -> None:
        super().__init__(ERR_INVALID_TOKEN, description)


class BadRequest(IntakeError):
    status = 400


class Unavailable(IntakeError):
    status = 503


# --- helpers -------------------------------------------------------------------------------------


def storable(value: Any, *, max_str: int | None = None) -> Any:
    """A copy safe for PostgreSQL text/jsonb: NUL characters (which it refuses) become U+FFFD. (Unpaired
    surrogates never get this far: request bodies and statements are parsed by portal.jsonbody.)"""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        return value[:max_str] if max_str else value
    if isinstance(value, dict):
        return {storable(k if isinstance(k, str) else str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _epoch(value) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _reasons_json(reasons) -> list[dict[str, str]]:
    return [{"code": r.code, "message": r.message} for r in reasons]


# Read on every registration, changed by an admin now and then: kept per process for a few seconds,
# like the policy (approvals.policy_store). clear_caches() empties them (tests, after admin changes).
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, Any]] = {}


def _cached(key: str, load):
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = load()
    _cache[key] = (now, value)
    return value


def clear_caches() -> None:
    _cache.clear()


def default_idp() -> IdPConnection | None:
    return _cached("default_idp", lambda: IdPConnection.objects.filter(is_default=True, enabled=True).first())


# --- who is registering --------------------------------------------------------------------------


@dataclass
class Requester:
    """The authenticated credential behind a registration and what it allows."""

    via: str
    owner: Any
    actor: Actor
    team: Any = None
    purpose: str = ""
    idp: IdPConnection | None = None
    token: InitialAccessToken | None = None
    statement: VerifiedStatement | None = None
    parent: Client | None = None
    ceiling_scopes: frozenset[str] | None = None
    ceiling_ttl: int | None = None
    ceiling_internal_only: bool = False
    audit_fields: dict[str, Any] = field(default_factory=dict)
    # Counted with the credential lookup when that is cheap (tokens); otherwise counted by _context().
    owner_live_clients: int | None = None

    @property
    def issuer(self) -> TrustedIssuer | None:
        return self.statement.issuer if self.statement else None

    def merge(self, body: dict[str, Any]) -> dict[str, Any]:
        """The metadata to validate: statement values override the body; the credential's purpose is the default."""
        if self.statement is not None:
            return merge_statement(body, self.statement)
        merged = dict(body)
        merged.pop("software_statement", None)
        if merged.get("purpose") is None and self.purpose:
            merged["purpose"] = self.purpose
        return merged


def _token_problem(token: InitialAccessToken, now) -> str | None:
    if token.revoked_at is not None:
        return "the initial access token has been revoked"
    if token.expires_at <= now:
        return "the initial access token has expired"
    if token.uses >= token.max_uses:
        return "the initial access token has been used up"
    return None


class _TokenLookup:
    """The initial access token by hash, with its owner, team and IdP and the owner's live-client count (the
    policy's early look at the quota; the binding check is ``inventory.quotas``): one hand-written query
    (``portal.rawsql``), the hottest read of the registration endpoint. The ORM equivalent (``select_related``
    + ``Subquery`` annotation) spent ~1 ms per call compiling itself."""

    def __init__(self) -> None:
        from inventory.models import Team
        from portal.models import User

        self.token = ModelColumns(InitialAccessToken, "t")
        # Intake never needs the owner's password hash or the IdP's credentials: not loaded (and the
        # credentials not decrypted) on every registration; a delivery that needs them loads them then.
        self.owner = ModelColumns(User, "u", defer=["password"])
        self.team = ModelColumns(Team, "tm")
        self.idp = ModelColumns(IdPConnection, "i", defer=["secrets"])
        self._sql: dict[str, str] = {}

    def sql(self, connection) -> str:
        sql = self._sql.get(connection.alias)
        if sql is None:
            qn = connection.ops.quote_name

            def col(model, name: str) -> str:
                return qn(model._meta.get_field(name).column)

            def table(model) -> str:
                return qn(model._meta.db_table)

            T, U, tm, i = InitialAccessToken, self.owner.model, self.team.model, IdPConnection
            live = ", ".join(f"'{state}'" for state in sorted(LIVE_STATES))  # constants, not input
            columns = ", ".join(c.select(connection) for c in (self.token, self.owner, self.team, self.idp))
            owner_live = f"c.{col(Client, 'owner')} = t.{col(T, 'owner')} AND c.{col(Client, 'state')} IN ({live})"
            count = f"(SELECT COUNT(*) FROM {table(Client)} c WHERE {owner_live})"  # noqa: S608
            joins = (
                f"JOIN {table(U)} u ON u.{qn(U._meta.pk.column)} = t.{col(T, 'owner')} "
                f"LEFT JOIN {table(tm)} tm ON tm.{qn(tm._meta.pk.column)} = t.{col(T, 'team')} "
                f"LEFT JOIN {table(i)} i ON i.{qn(i._meta.pk.column)} = t.{col(T, 'idp')}"
            )
            # Identifiers come from _meta (quoted) and the states are constants; the hash is a parameter.
            sql = f"SELECT {columns}, {count} FROM {table(T)} t {joins} WHERE t.{col(T, 'token_hash')} = %s"  # noqa: S608
            self._sql[connection.alias] = sql
        return sql

    def __call__(self, token_hash: str) -> InitialAccessToken | None:
        connection = connections[InitialAccessToken.objects.db]
        row = fetch_one(self.sql(connection), [token_hash], using=connection.alias)
        if row is None:
            return None
        offset = 0
        token = self.token.load(row, offset, connection)
        offset += len(self.token)
        token.owner = self.owner.load(row, offset, connection)
        offset += len(self.owner)
        token.team = self.team.load(row, offset, connection)
        offset += len(self.team)
        token.idp = self.idp.load(row, offset, connection)
        token.owner_live_clients = int(row[-1])
        return token


_token_with_owner = _TokenLookup()


def requester_authenticate(*, bearer: str | None, body: Any) -> Requester:
    """Find and check the credential; raise Unauthorized (401) or BadRequest (bad software statement)."""
    now = timezone.now()
    if bearer:
        if bearer.startswith(REGISTRATION_TOKEN_PREFIX + "_"):
            return _spawn_requester(bearer, now)
        token = _token_with_owner(hash_token(bearer))
        if token is None:
            raise Unauthorized("the bearer token is not a valid initial access token")
        problem = _token_problem(token, now)
        if problem:
            raise Unauthorized(problem)
        return Requester(
            via=CreatedVia.TOKEN,
            owner=token.owner,
            team=token.team,
            purpose=token.purpose,
            idp=token.idp,
            token=token,
            actor=Actor.agent(f"token {token.prefix}", str(token.pk)),
            ceiling_scopes=frozenset(token.allowed_scopes or ()),
            ceiling_ttl=token.max_ttl_seconds,
            ceiling_internal_only=token.internal_only,
            audit_fields={"token_id": token.pk, "token_prefix": token.prefix},
            owner_live_clients=token.owner_live_clients,
        )
    statement = body.get("software_statement") if isinstance(body, dict) else None
    if statement is None:
        raise Unauthorized("an initial access token (Authorization: Bearer) or a software_statement is required")
    try:
        verified = verify_software_statement(statement)
    except StatementError as exc:
        raise BadRequest(exc.error, exc.description)
    rule = verified.issuer
    return Requester(
        via=CreatedVia.SOFTWARE_STATEMENT,
        owner=rule.owner,
        team=rule.team,
        purpose=rule.purpose,
        idp=rule.idp,
        statement=verified,
        actor=Actor.agent(verified.subject, f"issuer:{rule.pk}"),
        ceiling_scopes=frozenset(rule.allowed_scopes or ()),
        ceiling_ttl=rule.max_ttl_seconds,
        ceiling_internal_only=rule.internal_only,
        audit_fields={"issuer_id": rule.pk, "issuer": rule.issuer, "subject": verified.subject},
    )


def _spawn_requester(bearer: str, now) -> Requester:
    parent_request = (
        RegistrationRequest.objects.select_related("client", "client__owner", "client__team", "client__idp")
        .filter(registration_access_token_hash=hash_token(bearer))
        .first()
    )
    parent = parent_request.client if parent_request else None
    if parent is None:
        raise Unauthorized("the bearer token is not a valid registration access token of a client")
    if parent.state != ClientState.ACTIVE:
        raise Unauthorized(f"the parent client is {parent.state}; only an active client can spawn children")
    if parent.spawn_revoked_at is not None:
        raise Unauthorized(_spawn_revoked_message(parent))
    return Requester(
        via=CreatedVia.SPAWN,
        owner=parent.owner,
        team=parent.team,
        purpose=parent.purpose,
        idp=parent.idp,
        parent=parent,
        actor=Actor.agent(f"client {parent.registration_id}", parent.registration_id),
        audit_fields={"parent": parent.registration_id},
    )


def _spawn_revoked_message(parent: Client) -> str:
    why = f": {parent.spawn_revoked_reason}" if parent.spawn_revoked_reason else ""
    return (
        f"the parent client's right to spawn children was revoked on {parent.spawn_revoked_at:%Y-%m-%d %H:%M} UTC{why}"
    )


# --- registration --------------------------------------------------------------------------------


@dataclass
class Submission:
    """What ``registration_submit`` did, for the view to answer."""

    request: RegistrationRequest
    verdict: Verdict | None
    client: Client | None = None
    registration_access_token: str | None = None
    error: str | None = None
    error_description: str | None = None

    @property
    def refused(self) -> bool:
        return self.request.state == RequestState.REFUSED


def _load_catalogue() -> dict[str, ScopeInfo]:
    rows = ScopeDefinition.objects.filter(is_active=True).values_list("name", "sensitivity", "category")
    return {name: ScopeInfo(name, sensitivity, category) for name, sensitivity, category in rows}


def _catalogue(scopes) -> dict[str, ScopeInfo]:
    """The catalogue entries for ``scopes`` (unknown names are simply absent: the policy refuses them)."""
    if not scopes:
        return {}
    catalogue = _cached("catalogue", _load_catalogue)
    return {name: catalogue[name] for name in scopes if name in catalogue}


def _owner_active(owner) -> bool:
    return bool(owner is not None and owner.is_active and getattr(owner, "deactivated_at", None) is None)


def _context(requester: Requester, md: ClientMetadata, now) -> RegistrationContext:
    owner = requester.owner
    live = requester.owner_live_clients
    if live is None:
        live = Client.objects.live().filter(owner=owner).count() if owner is not None else 0
    parent_fields: dict[str, Any] = {}
    parent = requester.parent
    if parent is not None:
        remaining = math.floor((parent.expires_at - now).total_seconds()) if parent.expires_at is not None else None
        parent_fields = {
            "parent_scopes": frozenset(parent.scopes or ()),
            "parent_remaining_ttl": remaining,
            "parent_depth": parent.depth,
            "parent_tier": parent.risk_tier,
            "parent_children": parent.children_spawned,
        }
    return RegistrationContext(
        **md.policy_fields(),
        catalogue=_catalogue(md.scope),
        owner_active=_owner_active(owner),
        owner_live_clients=live,
        via=requester.via,
        ceiling_scopes=requester.ceiling_scopes,
        ceiling_ttl=requester.ceiling_ttl,
        ceiling_internal_only=requester.ceiling_internal_only,
        **parent_fields,
    )


def _request_fields(requester: Requester, now, source_ip: str | None) -> dict[str, Any]:
    statement = requester.statement
    return {
        "kind": RequestKind.REGISTRATION,
        "via": requester.via,
        "owner": requester.owner,
        "team": requester.team,
        "token": requester.token,
        "issuer": requester.issuer,
        "statement_subject": storable(statement.subject, max_str=512) if statement else "",
        "parent_client": requester.parent,
        "source_ip": source_ip,
    }


def _audit_after(requester: Requester, request: RegistrationRequest, verdict: Verdict | None) -> dict[str, Any]:
    return storable(
        {
            "requester": requester.actor.label,
            "via": requester.via,
            **requester.audit_fields,
            "owner": requester.owner.get_username() if requester.owner is not None else None,
            "state": request.state,
            "requested_scopes": request.requested_scopes,
            "granted_scopes": request.granted_scopes,
            "granted_ttl": request.granted_ttl,
            "verdict": verdict.to_dict() if verdict else None,
            "error": request.error or None,
            "reasons": request.reasons,
        }
    )


# The request row of every outcome and the token's use, written out once (portal.rawsql): on the endpoint's
# hottest path the ORM spent more CPU compiling these statements than PostgreSQL spent running them.
_REQUEST_INSERT = InsertStatement(RegistrationRequest)


def _record_refusal(
    *,
    requester: Requester,
    body: Any,
    error: str,
    reasons: list[dict[str, str]],
    verdict: Verdict | None,
    md: ClientMetadata | None,
    config: PolicyConfig,
    source_ip: str | None,
) -> RegistrationRequest:
    """The refused row and its audit event: all a refused attempt leaves behind."""
    now = timezone.now()
    raw = body if isinstance(body, dict) else {"_body": body}
    raw = {k: v for k, v in raw.items() if k != "software_statement"}
    metadata = md.to_response_dict() if md is not None else raw
    scopes = list(md.scope) if md is not None else []
    if md is None and isinstance(raw.get("scope"), str):
        scopes = raw["scope"].split()[:50]

    def text(name: str, limit: int) -> str:
        value = md and getattr(md, name, None) or raw.get(name)
        return storable(value, max_str=limit) if isinstance(value, str) else ""

    request = RegistrationRequest(
        public_id=new_registration_id(),
        state=RequestState.REFUSED,
        metadata=storable(metadata),
        client_name=text("client_name", 200),
        software_id=text("software_id", 255),
        purpose=text("purpose", 2000) or requester.purpose,
        requested_scopes=storable(scopes),
        requested_ttl=md.requested_ttl if md is not None else None,
        audiences=storable(list(md.audiences)) if md is not None else [],
        internal_only=md.internal_only if md is not None else False,
        idp=requester.idp,
        policy_version=config.version,
        risk_tier=TIER_REFUSED,
        outcome=OUTCOME_REFUSE,
        reasons=storable(reasons),
        verdict=storable(verdict.to_dict()) if verdict else {},
        error=error,
        decided_at=now,
        decision_reason="refused by policy" if verdict else "refused: invalid client metadata",
        **_request_fields(requester, now, source_ip),
    )
    event = audit_event(
        actor=requester.actor,
        action="registration.refused",
        object_type="registration_request",
        object_id=request.public_id,
        after=_audit_after(requester, request, verdict),
        reason="; ".join(r["message"] for r in reasons)[:2000],
        policy_version=config.version,
    )
    _insert_with_event(request, event, token_id=None, now=now)
    return request


def registration_submit(*, requester: Requester, body: Any, source_ip: str | None = None) -> Submission:
    """Judge and record one RFC 7591 registration. Raises Unauthorized if the token ran out meanwhile."""
    config = active_policy()
    now = timezone.now()
    merged = requester.merge(body) if isinstance(body, dict) else body
    try:
        md = validate_client_metadata(merged, allow_shared_secret=config.allow_shared_secret)
    except MetadataError as exc:
        reasons = [{"code": "invalid_metadata", "message": m} for m in exc.reasons]
        request = _record_refusal(
            requester=requester,
            body=merged,
            error=exc.error,
            reasons=reasons,
            verdict=None,
            md=None,
            config=config,
            source_ip=source_ip,
        )
        return Submission(request=request, verdict=None, error=exc.error, error_description=exc.description)
    fetched = None
    if md.jwks_uri is not None:
        try:
            fetched = _fetch_keys(md.jwks_uri)
        except BadRequest as exc:
            reasons = [{"code": "invalid_jwks_uri", "message": exc.description}]
            request = _record_refusal(
                requester=requester,
                body=merged,
                error=exc.error,
                reasons=reasons,
                verdict=None,
                md=md,
                config=config,
                source_ip=source_ip,
            )
            return Submission(request=request, verdict=None, error=exc.error, error_description=exc.description)

    context = _context(requester, md, now)
    verdict = evaluate(context, config)
    if not verdict.refused:
        idp = requester.idp or default_idp()
        if idp is None:
            raise Unavailable("temporarily_unavailable", "no identity provider is configured for new registrations")
        try:
            return _record_accepted(
                requester=requester,
                md=md,
                verdict=verdict,
                idp=idp,
                now=now,
                source_ip=source_ip,
                config=config,
                fetched=fetched,
            )
        except OwnerQuotaExceeded as exc:
            # The owner's live clients were counted again under the owner's lock (concurrent registrations
            # took the room the first count saw): the same policy, on that count, refuses it (the limit
            # enforced was this config's, passed down by _record_accepted).
            verdict = evaluate(dataclasses.replace(context, owner_live_clients=exc.live), config)
    request = _record_refusal(
        requester=requester,
        body=merged,
        error=verdict.error,
        reasons=_reasons_json(verdict.reasons),
        verdict=verdict,
        md=md,
        config=config,
        source_ip=source_ip,
    )
    return Submission(
        request=request, verdict=verdict, error=verdict.error, error_description=verdict.error_description
    )


def _fetch_keys(jwks_uri: str) -> FetchedKeySet:
    """The key set behind ``jwks_uri``, fetched safely and checked like an inline ``jwks``; BadRequest (400
    invalid_client_metadata) naming the reason otherwise. Runs outside any transaction: it waits on the network."""
    try:
        return jwks_fetch(jwks_uri)
    except KeySetError as exc:
        raise BadRequest(ERR_INVALID_METADATA, str(exc))


def _keys_audit(md: ClientMetadata, fetched: FetchedKeySet | None) -> dict[str, Any]:
    """The client's keys for an audit event: where they came from and their RFC 7638 thumbprints."""
    if fetched is not None:
        return {
            "source": "jwks_uri",
            "jwks_uri": fetched.uri,
            "fetched_from": fetched.address,
            "thumbprints": fetched.thumbprints,
        }
    if md.jwks is not None:
        return {"source": "jwks", "thumbprints": jwks_thumbprints(md.jwks)}
    return {"source": None, "thumbprints": []}


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
    fields = [meta.get_field(name) for name in ("issuer", "jti", "expires_at", "registration_id", "used_at")]
    columns = ", ".join(qn(f.column) for f in fields)
    conflict = ", ".join(qn(meta.get_field(name).column) for name in ("issuer", "jti"))
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
        f" ON CONFLICT ({conflict}) DO NOTHING"
    )
    return sql, [f.get_db_prep_save(getattr(use, f.attname), connection) for f in fields]


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
class _SpawnSlot:
    """A spawn's claim on its parent's child count: the parent and the limit in, the new count out."""

    parent_id: int
    limit: int
    count: int | None = None


def _insert_with_event(
    request: RegistrationRequest,
    event: AuditEvent,
    *,
    token_id: int | None,
    now,
    spawn: _SpawnSlot | None = None,
    statement_use: SoftwareStatementUse | None = None,
) -> bool:
    """Write ``request`` and its audit ``event``, consuming what its credential allows once: one use of token
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
    guard = _guard(connection, token_id, spawn, statement_use, now)  # (CTE name, conditional write, params)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            _REQUEST_INSERT.insert(request)
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
        request, connection, expressions={}, source=guard[0] if guard is not None else ""
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
    request.pk = row[1]
    request._state.adding = False
    request._state.db = connection.alias
    if spawn is not None:
        spawn.count = row[2]
    return True


def _guard(
    connection, token_id: int | None, spawn: _SpawnSlot | None, statement_use: SoftwareStatementUse | None, now
) -> tuple[str, str, list] | None:
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


def _consume(guard: tuple[str, str, list]) -> bool:
    """Run a credential's once-only write (``_guard``) in the caller's transaction; False when it lost."""
    _name, sql, params = guard
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def _record_accepted(
    *,
    requester: Requester,
    md: ClientMetadata,
    verdict: Verdict,
    idp: IdPConnection,
    now,
    source_ip: str | None,
    config: PolicyConfig,
    fetched: FetchedKeySet | None = None,
) -> Submission:
    auto = verdict.outcome == OUTCOME_AUTO_APPROVE
    plaintext = new_token(REGISTRATION_TOKEN_PREFIX)
    registration_id = new_registration_id()
    metadata = storable(md.to_response_dict())
    request = RegistrationRequest(
        public_id=registration_id,
        state=RequestState.APPROVED if auto else RequestState.PENDING,
        metadata=metadata,
        client_name=md.client_name or "",
        software_id=md.software_id or "",
        purpose=md.purpose,
        requested_scopes=list(md.scope),
        requested_ttl=md.requested_ttl,
        granted_scopes=list(verdict.granted_scopes),
        granted_ttl=verdict.ttl_seconds,
        audiences=storable(list(md.audiences)),
        internal_only=md.internal_only,
        fetched_jwks=fetched.jwks if fetched is not None else None,
        idp=idp,
        registration_access_token_hash=hash_token(plaintext),
        policy_version=verdict.policy_version,
        risk_tier=verdict.tier,
        outcome=verdict.outcome,
        reasons=_reasons_json(verdict.reasons),
        verdict=verdict.to_dict(),
        approvals_needed=verdict.approvals_needed,
        decided_at=now if auto else None,
        decision_reason=f"auto-approved by policy v{verdict.policy_version}" if auto else "",
        **_request_fields(requester, now, source_ip),
    )
    token_id = requester.token.pk if requester.token is not None else None
    statement = requester.statement
    statement_use = statement.use(registration_id=registration_id, now=now) if statement is not None else None
    parent = requester.parent
    spawn_limit = config.max_children_per_parent
    spawn = _SpawnSlot(parent_id=parent.pk, limit=spawn_limit) if parent is not None else None

    def lost() -> IntakeError:
        """Why the credential's once-only write found nothing left (another registration took it meanwhile)."""
        if spawn is not None:
            return _spawn_refusal(parent, spawn_limit)
        if statement is not None:
            refusal = replayed(statement)
            return BadRequest(refusal.error, refusal.description)
        return Unauthorized("the initial access token has been used up")

    client = None
    # A pending request is one statement (_insert_with_event) that also consumes the credential's once-only write
    # (token use, parent's child slot or statement jti). An auto-approved one also creates its client, in one
    # transaction taking its locks in the order the one statement takes them: the credential's row first, then
    # the owner's quota lock (OwnerQuotaExceeded: nothing written), then the audit chain head. In the other
    # order, concurrent low- and medium-risk registrations on one token would each hold the row the other waits
    # for (a deadlock). A credential that ran out meanwhile leaves nothing behind either way.
    with transaction.atomic() if auto or spawn is not None else contextlib.nullcontext():
        if auto:
            guard = _guard(transaction.get_connection(), token_id, spawn, statement_use, now)
            if guard is not None:
                if not _consume(guard):
                    raise lost()
                if spawn is not None:
                    spawn.count = Client.objects.filter(pk=spawn.parent_id).values_list("children_spawned", flat=True)[
                        0
                    ]
            token_id, statement_use, guarded_spawn = None, None, None  # consumed
            # Delivered inline by the view once this commits (_deliver_inline), so no worker is nudged to race it.
            client = request_client_create(
                request=request,
                idp=idp,
                actor=requester.actor,
                reason=f"auto-approved by policy v{verdict.policy_version}",
                now=now,
                owner_limit=config.max_live_clients_per_owner,
                nudge_worker=False,
            )
            request.client = client
        else:
            guarded_spawn = spawn
        event = audit_event(
            actor=requester.actor,
            action="registration.accepted" if auto else "registration.pending",
            object_type="registration_request",
            object_id=registration_id,
            after=_audit_after(requester, request, verdict) | {"keys": storable(_keys_audit(md, fetched))},
            reason=verdict.error_description[:2000],
            policy_version=verdict.policy_version,
        )
        if not _insert_with_event(
            request, event, token_id=token_id, now=now, spawn=guarded_spawn, statement_use=statement_use
        ):
            raise lost()
        if spawn is not None:
            audit_record(
                actor=requester.actor,
                action="client.spawn",
                object_type="client",
                object_id=parent.registration_id,
                after={
                    "child": registration_id,
                    "child_state": request.state,
                    "children_spawned": spawn.count,
                    "max_children_per_parent": spawn_limit,
                    "granted_scopes": request.granted_scopes,
                },
                reason=f"spawned {registration_id} ({spawn.count} of {spawn_limit})",
                policy_version=verdict.policy_version,
            )
    return Submission(request=request, verdict=verdict, client=client, registration_access_token=plaintext)


def _spawn_refusal(parent: Client, limit: int) -> IntakeError:
    """Why a spawn lost its parent's conditional UPDATE (the policy saw a free slot a moment before)."""
    fresh = (
        Client.objects.filter(pk=parent.pk)
        .only("state", "children_spawned", "spawn_revoked_at", "spawn_revoked_reason")
        .first()
    )
    if fresh is None or fresh.state != ClientState.ACTIVE:
        return Unauthorized(
            f"the parent client is {getattr(fresh, 'state', 'gone')}; only an active client can spawn children"
        )
    if fresh.spawn_revoked_at is not None:
        return Unauthorized(_spawn_revoked_message(fresh))
    return BadRequest(
        ERR_INVALID_METADATA,
        f"the parent client has already spawned {fresh.children_spawned} "
        f"children; the limit is {limit} (policy max_children_per_parent)",
    )


def registration_unauthorized_record(
    *,
    description: str,
    bearer: str | None,
    source_ip: str | None,
    path: str = "/oauth2/register",
    error: str = ERR_INVALID_TOKEN,
) -> None:
    """Count a credential that was refused (401, or a software statement that did not verify).

    One upsert into the per-minute tally, never an audit append on the request path: the periodic fold
    writes one audit event per source and minute with the count (``approvals.unauthorized``). Only the
    credential's public prefix is kept, never the credential.
    """
    unauthorized_count(
        action=ACTION_UNAUTHORIZED if error == ERR_INVALID_TOKEN else ACTION_STATEMENT_REJECTED,
        source=source_ip,
        credential_prefix=storable((bearer or "")[:12]),
        path=storable(path),
        error=storable(error),
        reason=storable(description, max_str=500),
    )


# --- inline delivery on the 201 path ---------------------------------------------------------------


def _deliver_inline(client: Client) -> bool:
    """Create ``client`` at its IdP now, with the workers' own delivery code, bounded by
    REGISTRAR_INLINE_DELIVERY_TIMEOUT; True once it is active there.

    Any failure or timeout means "not yet": the outbox entry stays due, a worker is nudged to finish the job and
    the agent (answered 202) polls.
    """
    try:
        delivered = bool(deliver_client_outbox_inline(client.pk, timeout=settings.REGISTRAR_INLINE_DELIVERY_TIMEOUT))
    except Exception:  # noqa: BLE001 - see docstring
        log_event(logger, "inline_delivery_failed", level=logging.WARNING, client=client.registration_id, exc_info=True)
        delivered = False
    if not delivered:
        outbox_nudge(client_id=client.pk)  # a worker takes over now, not at the next periodic requeue
        return False
    client.refresh_from_db(fields=["idp_client_id", "state", "activated_at", "state_changed_at"])
    return True


# --- RFC 7592 ------------------------------------------------------------------------------------


def _authenticated_request(registration_id: str, bearer: str | None) -> RegistrationRequest:
    if not bearer:
        raise Unauthorized("a registration access token (Authorization: Bearer) is required")
    request = (
        RegistrationRequest.objects.select_related("client", "client__idp", "idp", "owner")
        .filter(public_id=registration_id, registration_access_token_hash=hash_token(bearer))
        .first()
    )
    if request is None:
        raise Unauthorized("the registration access token is not valid for this registration")
    return request


def _rotate(request: RegistrationRequest, bearer: str) -> str:
    """Swap the registration access token; the old one stops working. Conditional: a replay loses."""
    plaintext = new_token(REGISTRATION_TOKEN_PREFIX)
    rotated = RegistrationRequest.objects.filter(
        pk=request.pk, registration_access_token_hash=hash_token(bearer)
    ).update(registration_access_token_hash=hash_token(plaintext))
    if not rotated:
        raise Unauthorized("the registration access token was already used")
    request.registration_access_token_hash = hash_token(plaintext)
    return plaintext


def _revoke_token(request: RegistrationRequest) -> None:
    RegistrationRequest.objects.filter(pk=request.pk).update(registration_access_token_hash=None)


def _ended_error(request: RegistrationRequest) -> IntakeError | None:
    """400 for a request that will never become a client (denied, lapsed, withdrawn)."""
    reason = request.decision_reason or ""
    error = "unapproved_software_statement" if request.via == CreatedVia.SOFTWARE_STATEMENT else "access_denied"
    if request.state == RequestState.DENIED:
        return BadRequest(error, f"the registration was denied: {reason or 'no reason given'}")
    if request.state == RequestState.LAPSED:
        return BadRequest(error, f"the registration lapsed without a decision{': ' + reason if reason else ''}")
    if request.state == RequestState.WITHDRAWN:
        return BadRequest(error, f"the registration was withdrawn{': ' + reason if reason else ''}")
    return None


@dataclass
class Management:
    """The outcome of an RFC 7592 read or update, for the view to answer."""

    status: int
    request: RegistrationRequest
    client: Client | None
    registration_access_token: str | None


def registration_read(*, registration_id: str, bearer: str | None) -> Management:
    """RFC 7592 GET: 200 with the client when live, 202 while pending or provisioning, 400 once refused."""
    request = _authenticated_request(registration_id, bearer)
    ended = _ended_error(request)
    if ended is not None:
        raise ended
    client = request.client
    if client is not None and client.state not in (ClientState.PROVISIONING, ClientState.ACTIVE, ClientState.SUSPENDED):
        _revoke_token(request)
        raise Unauthorized(f"the client is {client.state}; its registration access token is no longer valid")
    new = _rotate(request, bearer)
    status = 200 if client is not None and client.state != ClientState.PROVISIONING else 202
    return Management(status=status, request=request, client=client, registration_access_token=new)


def _agent_actor(request: RegistrationRequest) -> Actor:
    return Actor.agent(f"client {request.public_id}", request.public_id)


def _current_metadata(request: RegistrationRequest, client: Client) -> ClientMetadata:
    stored = dict(client.metadata or request.metadata or {})
    stored["scope"] = " ".join(client.scopes or ())
    stored.setdefault("purpose", client.purpose or request.purpose or "unknown")
    try:
        md = validate_client_metadata(stored, allow_shared_secret=True)
    except MetadataError:
        # Metadata stored by an older validator: compare on what the client row holds.
        md = ClientMetadata(purpose=client.purpose or "unknown", scope=tuple(client.scopes or ()))
    return dataclasses.replace(md, requested_ttl=None)


def registration_update(*, registration_id: str, bearer: str | None, body: Any) -> Management:
    """RFC 7592 PUT by the agent: narrow scopes or lifetime, rotate keys. Anything wider is refused."""
    request = _authenticated_request(registration_id, bearer)
    ended = _ended_error(request)
    if ended is not None:
        raise ended
    client = request.client
    if client is None:
        raise BadRequest(ERR_INVALID_METADATA, "the registration is waiting for review; it can be read or deleted")
    if client.state not in (ClientState.PROVISIONING, ClientState.ACTIVE, ClientState.SUSPENDED):
        _revoke_token(request)
        raise Unauthorized(f"the client is {client.state}; its registration access token is no longer valid")
    if not isinstance(body, dict):
        raise BadRequest(ERR_INVALID_METADATA, "client metadata must be a JSON object")
    claimed = body.get("client_id")
    if claimed is not None and claimed not in (client.idp_client_id, client.registration_id):
        raise BadRequest(ERR_INVALID_METADATA, "client_id does not match this registration")
    body = {k: v for k, v in body.items() if k != "software_statement"}
    body.setdefault("purpose", client.purpose)
    config = active_policy()
    try:
        new = validate_client_metadata(body, allow_shared_secret=config.allow_shared_secret)
    except MetadataError as exc:
        raise BadRequest(exc.error, exc.description)
    current = _current_metadata(request, client)
    base = client.created_at
    current_ttl = max(0, math.ceil((client.expires_at - base).total_seconds())) if client.expires_at else None
    problems = current.narrowing_problems(new, current_ttl_seconds=current_ttl)
    if problems:
        raise BadRequest(ERR_INVALID_METADATA, "widening needs a new registration: " + "; ".join(problems))
    # Keys behind a jwks_uri are fetched and checked on every update (that is how an agent rotates them).
    fetched = _fetch_keys(new.jwks_uri) if new.jwks_uri is not None else None
    return _apply_narrowing(request=request, client=client, new=new, bearer=bearer, base=base, fetched=fetched)


@transaction.atomic
def _apply_narrowing(
    *, request, client: Client, new: ClientMetadata, bearer: str, base, fetched: FetchedKeySet | None = None
) -> Management:
    locked = Client.objects.select_for_update().get(pk=client.pk)
    old_keys = jwks_thumbprints(locked.jwks)
    before = client_snapshot(locked) | {"keys": {"jwks_uri": locked.jwks_uri or None, "thumbprints": old_keys}}
    scopes = [s for s in locked.scopes if s in new.scope]
    expires_at = locked.expires_at
    if new.requested_ttl is not None:
        proposed = base + timedelta(seconds=new.requested_ttl)
        expires_at = proposed if expires_at is None else min(expires_at, proposed)
    metadata = storable(new.to_response_dict())
    metadata["scope"] = " ".join(scopes)
    locked.scopes = scopes
    locked.expires_at = expires_at
    locked.metadata = metadata
    locked.name = new.client_name or locked.name
    locked.auth_method = new.token_endpoint_auth_method
    locked.jwks = fetched.jwks if fetched is not None else new.jwks
    locked.jwks_uri = new.jwks_uri or ""
    locked.software_version = new.software_version or ""
    locked.save(
        update_fields=[
            "scopes",
            "expires_at",
            "metadata",
            "name",
            "auth_method",
            "jwks",
            "jwks_uri",
            "software_version",
        ]
    )
    audit_record(
        actor=_agent_actor(request),
        action="client.narrow",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked)
        | {
            "auth_method": locked.auth_method,
            "key_rotated": jwks_thumbprints(locked.jwks) != old_keys,
            "keys": storable(_keys_audit(new, fetched)),
        },
        reason="RFC 7592 update by the agent",
        policy_version=locked.policy_version,
    )
    outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
    token = _rotate(request, bearer)
    return Management(status=200, request=request, client=locked, registration_access_token=token)


def registration_delete(*, registration_id: str, bearer: str | None) -> None:
    """RFC 7592 DELETE: withdraw a pending request or retire the client (its IdP removal is queued)."""
    request = _authenticated_request(registration_id, bearer)
    actor = _agent_actor(request)
    with transaction.atomic():
        if request.state == RequestState.PENDING:
            # Decided a moment ago (a conflict): the delete still revokes the registration access token.
            with contextlib.suppress(DecisionConflict):
                request_withdraw_by_registrant(request=request, actor=actor)
        elif request.client is not None and request.client.state in (
            ClientState.PROVISIONING,
            ClientState.ACTIVE,
            ClientState.SUSPENDED,
        ):
            try:
                client_transition(
                    client=request.client,
                    target=ClientState.RETIRED,
                    actor=actor,
                    reason="RFC 7592 delete by the agent",
                )
            except LifecycleError:
                raise Unauthorized("the client is no longer live")
        _revoke_token(request)


def client_information(
    *, request: RegistrationRequest, client: Client, registration_access_token: str, registration_client_uri: str
) -> dict[str, Any]:
    """The RFC 7591 §3.2.1 client information response (also RFC 7592 read/update)."""
    info: dict[str, Any] = {
        "client_id": client.idp_client_id,
        "client_id_issued_at": _epoch(client.activated_at or client.created_at),
        "registration_access_token": registration_access_token,
        "registration_client_uri": registration_client_uri,
    }
    metadata = dict(client.metadata or {})
    metadata["scope"] = " ".join(client.scopes or ())
    metadata.pop("requested_ttl", None)
    info.update(metadata)
    info.update(
        {
            "expires_at": _epoch(client.expires_at),
            "issuer": client.idp.issuer,
            "token_endpoint": client.idp.token_endpoint,
            "registration_id": request.public_id,
            "status": client.state,
            "risk_tier": client.risk_tier,
            "policy_version": client.policy_version,
        }
    )
    if client.idp.kind == IdPKind.DRY_RUN:
        info["dry_run"] = True  # nothing was created at a real IdP: say so to the agent
    return info


def pending_information(
    *, request: RegistrationRequest, registration_access_token: str, registration_client_uri: str, status: str
) -> dict[str, Any]:
    """The 202 body: where to poll and with which token."""
    return {
        "status": status,
        "registration_id": request.public_id,
        "registration_client_uri": registration_client_uri,
        "registration_access_token": registration_access_token,
        "risk_tier": request.risk_tier,
        "approvals_needed": request.approvals_needed,
        "policy_version": request.policy_version,
        "reasons": [r["message"] for r in request.reasons or []],
    }


__all__ = [
    "BadRequest",
    "IntakeError",
    "Management",
    "Requester",
    "Submission",
    "Unauthorized",
    "client_information",
    "pending_information",
    "registration_delete",
    "registration_read",
    "registration_submit",
    "registration_unauthorized_record",
    "registration_update",
    "requester_authenticate",
]
