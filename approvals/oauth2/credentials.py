"""Who is registering: the credential behind an RFC 7591 registration, told apart by the bearer's prefix.

- ``Authorization: Bearer rat_…`` — an initial access token (RFC 7591 §3): owner, team, purpose, scope and
  TTL ceiling, internal-only flag and target IdP come from the token.
- ``Authorization: Bearer rrat_…`` — a parent client's registration access token: the registration spawns
  a child with the parent's owner, at most its scopes and remaining lifetime, one level deeper.
- no bearer, ``software_statement`` in the body — a JWT from a TrustedIssuer (``approvals.statements``).
- neither — an anonymous registration under the default IdP's enabled ``AnonymousProfile``
  (``approvals.oauth2.anonymous``); 401 when there is none.

``requester_authenticate`` checks the credential and returns a :class:`Requester`; nothing is consumed here
(a token's use, a parent's child slot or a statement's ``jti`` is taken by ``approvals.oauth2.credential_use``
when the registration is written). ``registration_unauthorized_record`` counts a credential that was refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

from django.db import connections
from django.utils import timezone

from approvals.models import InitialAccessToken, RegistrationRequest, TrustedIssuer
from approvals.oauth2.errors import ERR_INVALID_METADATA, ERR_INVALID_TOKEN, BadRequest, IntakeError, Unauthorized
from approvals.oauth2.storable import storable
from approvals.statements import StatementError, VerifiedStatement, merge_statement, verify_software_statement
from approvals.unauthorized import (
    ACTION_ANONYMOUS_REFUSED,
    ACTION_STATEMENT_REJECTED,
    ACTION_UNAUTHORIZED,
    unauthorized_count,
)
from inventory.choices import LIVE_STATES, ClientState, CreatedVia
from inventory.models import Client, IdPConnection
from portal.audit import Actor
from portal.crypto import hash_token
from portal.rawsql import ModelColumns, fetch_one

REGISTRATION_TOKEN_PREFIX = "rrat"  # new_token() adds the "_"


if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class _OwnerLiveClients(TypedDict):
        owner_live_clients: int

    # A token as _TokenLookup returns it: with the owner's live-client count, like a QuerySet annotation.
    LookedUpToken = WithAnnotations[InitialAccessToken, _OwnerLiveClients]


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
    # Counted with the credential lookup when that is cheap (tokens); otherwise counted by the registration (``approvals.oauth2.register``).
    owner_live_clients: int | None = None
    # Pre-registration (approvals.preregistration): request fields beyond the credential's (submitted_by, the
    # cimd_* document fields), policy inputs (cimd_host, the trusted domain) and the validator's public web
    # clients (a CIMD document may describe a browser-based public client).
    request_fields: dict[str, Any] = field(default_factory=dict)
    policy_inputs: dict[str, Any] = field(default_factory=dict)
    public_web_clients: bool = False
    # Anonymous registration (``approvals.oauth2.anonymous``): the profile, its value for an omitted
    # internal_only, and its live-client limit (in place of the per-owner one).
    profile: Any = None
    internal_only_default: bool | None = None
    owner_live_limit: int | None = None

    @property
    def issuer(self) -> TrustedIssuer | None:
        return self.statement.issuer if self.statement else None

    def merge(self, body: dict[str, Any]) -> dict[str, Any]:
        """The metadata to validate: statement values override the body; the credential fills what is omitted.

        A plain RFC 7591 client sends no Registrar extension (``purpose``, ``internal_only``, ``audiences``,
        ``requested_ttl``): each omitted one takes the credential's value (token, trusted issuer rule, parent
        client or anonymous profile), or else the policy default (``requested_ttl``). Only a value the client
        does send can conflict with the credential's ceiling, and only that is refused.
        """
        if self.statement is not None:
            merged = merge_statement(body, self.statement)
        else:
            merged = dict(body)
            merged.pop("software_statement", None)
            if merged.get("purpose") is None and self.purpose:
                merged["purpose"] = self.purpose
        for name, value in self.defaults().items():
            if merged.get(name) is None:
                merged[name] = value
        return merged

    def defaults(self) -> dict[str, Any]:
        """Values for omitted extension fields: what the credential (or the parent) already says."""
        out: dict[str, Any] = {}
        if self.internal_only_default is not None:
            out["internal_only"] = self.internal_only_default
        if self.ceiling_internal_only:
            out["internal_only"] = True
        parent = self.parent
        if parent is not None:
            if parent.internal_only:
                out["internal_only"] = True
            if parent.audiences:
                out["audiences"] = list(parent.audiences)
        return out


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

    def __call__(self, token_hash: str) -> LookedUpToken | None:
        connection = connections[InitialAccessToken.objects.db]
        row = fetch_one(self.sql(connection), [token_hash], using=connection.alias)
        if row is None:
            return None
        offset = 0
        token = self.token.load(row, offset, connection)
        assert token is not None  # the FROM table's row: its primary key is never NULL
        offset += len(self.token)
        owner = self.owner.load(row, offset, connection)
        assert owner is not None  # an inner join: every token has an owner
        token.owner = owner
        offset += len(self.owner)
        token.team = self.team.load(row, offset, connection)
        offset += len(self.team)
        token.idp = self.idp.load(row, offset, connection)
        looked_up = cast("LookedUpToken", token)
        looked_up.owner_live_clients = int(row[-1])
        return looked_up


_token_with_owner = _TokenLookup()


def requester_authenticate(*, bearer: str | None, body: Any, idp: IdPConnection | None = None) -> Requester:
    """Find and check the credential; raise Unauthorized (401) or BadRequest (bad software statement).

    ``idp`` is the IdP connection the registration endpoint named (``/oauth2/idp/<name>/register``): it picks the
    anonymous profile; a credential carries its own IdP."""
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
        # No credential at all: an anonymous registration, if an admin enabled a profile for it (else 401).
        from approvals.oauth2.anonymous import anonymous_profile, anonymous_requester

        return anonymous_requester(anonymous_profile(idp))
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
    parent_reg_request = (
        RegistrationRequest.objects.select_related("client", "client__owner", "client__team", "client__idp")
        .filter(registration_access_token_hash=hash_token(bearer))
        .first()
    )
    parent = parent_reg_request.client if parent_reg_request else None
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


def spawn_refusal(parent: Client, limit: int) -> IntakeError:
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
    anonymous: bool = False,
) -> None:
    """Count a credential that was refused (401, or a software statement that did not verify).

    One upsert into the per-minute tally, never an audit append on the request path: the periodic fold
    writes one audit event per source and minute with the count (``approvals.unauthorized``). Only the
    credential's public prefix is kept, never the credential.
    """
    unauthorized_count(
        action=ACTION_ANONYMOUS_REFUSED
        if anonymous
        else ACTION_UNAUTHORIZED
        if error == ERR_INVALID_TOKEN
        else ACTION_STATEMENT_REJECTED,
        source=source_ip,
        credential_prefix=storable((bearer or "")[:12]),
        path=storable(path),
        error=storable(error),
        reason=storable(description, max_str=500),
    )
