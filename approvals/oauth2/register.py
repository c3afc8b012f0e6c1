"""RFC 7591 registration (``registration_submit``): judge one registration and record its outcome.

The body is validated (``approvals.metadata``; a ``jwks_uri``'s keys are fetched and vetted by
``approvals.oauth2.client_keys``), the active policy version judges it (``approvals.policy.evaluate``) and the
outcome is recorded as a RegistrationRequest with one audit event:

- refused → a ``refused`` request row and its audit event, nothing else. A refused attempt does NOT use up
  the initial access token: the token's owner sees the attempt, and an agent that fixes its metadata can
  try again. Only accepted and pending registrations consume a use.
- review → a ``pending`` request; approvers take it from there (``approvals.services``).
- auto-approve → an ``approved`` request and its client (``provisioning`` + outbox CREATE) in the same
  transaction; after commit the view calls ``approvals.oauth2.inline_delivery.deliver_inline`` (the workers'
  delivery code) to create it at the IdP right away.

What the credential allows once (a token's use, a parent's child slot, a statement's ``jti``) is consumed by a
conditional write (``approvals.oauth2.credential_use``), so concurrent registrations can never exceed it; the
loser of a race gets 401 (token, parent gone), 400 ``invalid_software_statement`` (a replayed statement) or 400
``invalid_client_metadata`` (the parent's child limit) and nothing is written. A refused attempt uses nothing.

The owner's live-client quota is judged twice: the policy sees the count read with the credential (a cheap
early refusal, recorded like any other), and an auto-approved registration is checked again inside the
transaction that creates its client, under the owner's row lock (``inventory.quotas``). A registration that
loses that race is refused by the same policy rule on the recounted figure (400 ``invalid_client_metadata``,
"the owner already has 50 live clients; the limit is 50") and, like every refusal, uses nothing up.

The registration access token (prefix ``rrat_``) handed out here is stored hashed on the request; RFC 7592
(``approvals.oauth2.client_config``) rotates it on every use.

An anonymous registration (``approvals.oauth2.anonymous``) is judged the same way under its profile; a refused
one raises ``AnonymousRefusal`` instead of leaving a row, and under a coalescing profile an identical live
registration is handed out again (``_coalesce_or_record``) instead of a new one being recorded.

(About 470 lines: the refused and the accepted record are the two halves of one decision and share the
request fields and audit payload; the once-only writes, credentials and keys are already elsewhere.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.choices import RequestKind, RequestState
from approvals.metadata import ClientMetadata, MetadataError, validate_client_metadata
from approvals.models import RegistrationRequest
from approvals.oauth2 import anonymous
from approvals.oauth2.cache import default_idp, scope_catalogue
from approvals.oauth2.client_keys import keys_audit, keys_fetch
from approvals.oauth2.credential_use import SpawnSlot, consume, credential_guard, insert_with_event
from approvals.oauth2.credentials import REGISTRATION_TOKEN_PREFIX, Requester, spawn_refusal
from approvals.oauth2.errors import BadRequest, IntakeError, Unauthorized, Unavailable
from approvals.oauth2.storable import storable
from approvals.policy import (
    OUTCOME_AUTO_APPROVE,
    OUTCOME_REFUSE,
    TIER_REFUSED,
    PolicyConfig,
    RegistrationContext,
    Verdict,
    evaluate,
)
from approvals.policy_store import active_policy
from approvals.services import request_client_create
from approvals.statements import replayed
from inventory.keys import FetchedKeySet
from inventory.models import Client, IdPConnection
from inventory.quotas import OwnerQuotaExceeded
from inventory.services import new_registration_id
from portal.audit import audit_event, audit_record
from portal.crypto import hash_token, new_token


def _reasons_json(reasons) -> list[dict[str, str]]:
    return [{"code": r.code, "message": r.message} for r in reasons]


@dataclass
class Submission:
    """What ``registration_submit`` did, for the view to answer."""

    reg_request: RegistrationRequest
    verdict: Verdict | None
    client: Client | None = None
    registration_access_token: str | None = None
    error: str | None = None
    error_description: str | None = None
    coalesced: bool = False  # an anonymous registration handed an identical live one (approvals.oauth2.anonymous)

    @property
    def refused(self) -> bool:
        return self.reg_request.state == RequestState.REFUSED


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
        catalogue=scope_catalogue(md.scope),
        owner_active=_owner_active(owner),
        owner_live_clients=live,
        via=requester.via,
        ceiling_scopes=requester.ceiling_scopes,
        ceiling_ttl=requester.ceiling_ttl,
        ceiling_internal_only=requester.ceiling_internal_only,
        **parent_fields,
        **requester.policy_inputs,
        **_anonymous_fields(requester, md),
    )


def _anonymous_fields(requester: Requester, md: ClientMetadata) -> dict[str, Any]:
    if requester.profile is None:
        return {}
    return {
        "anonymous": anonymous.anonymous_rules(requester.profile),
        "grant_types": md.grant_types,
        "response_types": md.response_types,
        "owner_live_limit": requester.owner_live_limit,
    }


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
        "profile": requester.profile,
        "source_ip": source_ip,
        **requester.request_fields,
    }


def _audit_after(requester: Requester, reg_request: RegistrationRequest, verdict: Verdict | None) -> dict[str, Any]:
    return storable(
        {
            "requester": requester.actor.label,
            "via": requester.via,
            **requester.audit_fields,
            "owner": requester.owner.get_username() if requester.owner is not None else None,
            "state": reg_request.state,
            "requested_scopes": reg_request.requested_scopes,
            "granted_scopes": reg_request.granted_scopes,
            "granted_ttl": reg_request.granted_ttl,
            "verdict": verdict.to_dict() if verdict else None,
            "error": reg_request.error or None,
            "reasons": reg_request.reasons,
        }
    )


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
    """The refused row and its audit event: all a refused attempt leaves behind. An anonymous one leaves
    nothing: it raises AnonymousRefusal, answered and counted by the view (``approvals.oauth2.anonymous``)."""
    if requester.profile is not None:
        raise anonymous.AnonymousRefusal(error, "; ".join(r["message"] for r in reasons)[:2000])
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

    reg_request = RegistrationRequest(
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
        object_id=reg_request.public_id,
        after=_audit_after(requester, reg_request, verdict),
        reason="; ".join(r["message"] for r in reasons)[:2000],
        policy_version=config.version,
    )
    insert_with_event(reg_request, event, token_id=None, now=now)
    return reg_request


def registration_submit(*, requester: Requester, body: Any, source_ip: str | None = None) -> Submission:
    """Judge and record one RFC 7591 registration. Raises Unauthorized if the token ran out meanwhile."""
    config = active_policy()
    now = timezone.now()
    merged = requester.merge(body) if isinstance(body, dict) else body
    try:
        md = validate_client_metadata(
            merged, allow_shared_secret=config.allow_shared_secret, public_web_clients=requester.public_web_clients
        )
    except MetadataError as exc:
        reasons = [{"code": "invalid_metadata", "message": m} for m in exc.reasons]
        reg_request = _record_refusal(
            requester=requester,
            body=merged,
            error=exc.error,
            reasons=reasons,
            verdict=None,
            md=None,
            config=config,
            source_ip=source_ip,
        )
        return Submission(reg_request=reg_request, verdict=None, error=exc.error, error_description=exc.description)
    fetched = None
    if md.jwks_uri is not None:
        try:
            fetched = keys_fetch(md.jwks_uri)
        except BadRequest as exc:
            reasons = [{"code": "invalid_jwks_uri", "message": exc.description}]
            reg_request = _record_refusal(
                requester=requester,
                body=merged,
                error=exc.error,
                reasons=reasons,
                verdict=None,
                md=md,
                config=config,
                source_ip=source_ip,
            )
            return Submission(reg_request=reg_request, verdict=None, error=exc.error, error_description=exc.description)

    identity = anonymous.metadata_identity(md)
    coalescing = _Coalescing.start(requester, md, identity, now)
    if coalescing is not None and coalescing.live is not None:
        requester = dataclasses.replace(requester, owner_live_clients=coalescing.live)
    context = _context(requester, md, now)
    verdict = evaluate(context, config)
    if not verdict.refused:
        idp = requester.idp or default_idp()
        if idp is None:
            raise Unavailable("temporarily_unavailable", "no identity provider is configured for new registrations")
        try:
            if coalescing is not None:
                return _coalesce_or_record(
                    coalescing=coalescing,
                    requester=requester,
                    md=md,
                    verdict=verdict,
                    idp=idp,
                    now=now,
                    source_ip=source_ip,
                    config=config,
                    fetched=fetched,
                    identity=identity,
                )
            return _record_accepted(
                requester=requester,
                md=md,
                verdict=verdict,
                idp=idp,
                now=now,
                source_ip=source_ip,
                config=config,
                fetched=fetched,
                identity=identity,
            )
        except OwnerQuotaExceeded as exc:
            # The owner's live clients were counted again under the owner's lock (concurrent registrations
            # took the room the first count saw): the same policy, on that count, refuses it (the limit
            # enforced was this config's, passed down by _record_accepted).
            verdict = evaluate(dataclasses.replace(context, owner_live_clients=exc.live), config)
    if verdict.error is None:  # a refusal always names its RFC 7591 error; the quota re-evaluation must refuse
        raise RuntimeError(f"policy v{verdict.policy_version} returned {verdict.outcome!r} for a refused registration")
    reg_request = _record_refusal(
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
        reg_request=reg_request, verdict=verdict, error=verdict.error, error_description=verdict.error_description
    )


@dataclass
class _Coalescing:
    """An anonymous registration under a coalescing profile: its key and, on PostgreSQL, what the unlocked
    lookup found, read with the owner's live clients in one statement (the policy needs that count anyway)."""

    key: str
    window_seconds: int
    found: RegistrationRequest | None = None
    live: int | None = None

    @classmethod
    def start(cls, requester: Requester, md: ClientMetadata, identity: str, now) -> _Coalescing | None:
        profile = requester.profile
        if profile is None or not profile.coalesce:
            return None
        key = anonymous.coalesce_key(profile=profile, owner_id=requester.owner.pk, identity=identity, md=md)
        coalescing = cls(key=key, window_seconds=profile.coalesce_window_seconds)
        if transaction.get_connection().vendor == "postgresql" and requester.owner_live_clients is None:
            coalescing.found, coalescing.live = anonymous.coalesce_find_with_live_count(
                key=key, window_seconds=profile.coalesce_window_seconds, now=now, owner_id=requester.owner.pk
            )
        return coalescing


def _coalesce_or_record(
    *, coalescing: _Coalescing, requester: Requester, md: ClientMetadata, now, source_ip: str | None, **kwargs
) -> Submission:
    """An anonymous registration under a coalescing profile: the live registration identical in effect, handed
    out again, or a new one — decided under the key's lock, so two identical registrations at once make one."""
    key = coalescing.key
    if coalescing.live is not None:
        # PostgreSQL, the common case — a repeat of a live registration — costs no more than a new one: the
        # lookup (read with the policy's count), then one conditional statement (token + count + audit event),
        # no lock, no transaction of its own. A miss, or a concurrent reuse of the same registration, takes
        # the locked path below.
        existing = coalescing.found
        if existing is not None:
            plaintext = anonymous.coalesce_reuse_at_once(
                existing=existing, actor=requester.actor, source_ip=source_ip, now=now
            )
            if plaintext is not None:
                return Submission(
                    reg_request=existing,
                    verdict=kwargs["verdict"],
                    client=existing.client,
                    registration_access_token=plaintext,
                    coalesced=True,
                )
    with transaction.atomic():
        anonymous.coalesce_lock(key)
        existing = anonymous.coalesce_find(key=key, window_seconds=coalescing.window_seconds, now=now)
        if existing is not None:
            plaintext = None
            if coalescing.live is not None:  # PostgreSQL: the one statement again (no other reuse can race us now)
                plaintext = anonymous.coalesce_reuse_at_once(
                    existing=existing, actor=requester.actor, source_ip=source_ip, now=now
                )
            if plaintext is None:
                plaintext = anonymous.coalesce_reuse(
                    existing=existing, actor=requester.actor, source_ip=source_ip, now=now
                )
            return Submission(
                reg_request=existing,
                verdict=kwargs["verdict"],
                client=existing.client,
                registration_access_token=plaintext,
                coalesced=True,
            )
        return _record_accepted(requester=requester, md=md, now=now, source_ip=source_ip, coalesce=key, **kwargs)


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
    identity: str = "",
    coalesce: str = "",
) -> Submission:
    auto = verdict.outcome == OUTCOME_AUTO_APPROVE
    plaintext = new_token(REGISTRATION_TOKEN_PREFIX)
    registration_id = new_registration_id()
    metadata = storable(md.to_response_dict())
    reg_request = RegistrationRequest(
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
        software_identity=identity,
        coalesce_key=coalesce,
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
    spawn = SpawnSlot(parent_id=parent.pk, limit=spawn_limit) if parent is not None else None

    def lost() -> IntakeError:
        """Why the credential's once-only write found nothing left (another registration took it meanwhile)."""
        if parent is not None:  # a spawn
            return spawn_refusal(parent, spawn_limit)
        if statement is not None:
            refusal = replayed(statement)
            return BadRequest(refusal.error, refusal.description)
        return Unauthorized("the initial access token has been used up")

    client = None
    # A pending request is one statement (insert_with_event) that also consumes the credential's once-only write
    # (token use, parent's child slot or statement jti). An auto-approved one also creates its client, in one
    # transaction taking its locks in the order the one statement takes them: the credential's row first, then
    # the owner's quota lock (OwnerQuotaExceeded: nothing written), then the audit chain head. In the other
    # order, concurrent low- and medium-risk registrations on one token would each hold the row the other waits
    # for (a deadlock). A credential that ran out meanwhile leaves nothing behind either way.
    with transaction.atomic() if auto or spawn is not None else contextlib.nullcontext():
        if auto:
            guard = credential_guard(transaction.get_connection(), token_id, spawn, statement_use, now)
            if guard is not None:
                if not consume(guard):
                    raise lost()
                if spawn is not None:
                    spawn.count = Client.objects.filter(pk=spawn.parent_id).values_list("children_spawned", flat=True)[
                        0
                    ]
            token_id, statement_use, guarded_spawn = None, None, None  # consumed
            # Delivered inline by the view once this commits (inline_delivery.deliver_inline): no worker is nudged.
            client = request_client_create(
                reg_request=reg_request,
                idp=idp,
                actor=requester.actor,
                reason=f"auto-approved by policy v{verdict.policy_version}",
                now=now,
                owner_limit=config.max_live_clients_per_owner
                if requester.owner_live_limit is None
                else requester.owner_live_limit,
                nudge_worker=False,
            )
            reg_request.client = client
        else:
            guarded_spawn = spawn
        event = audit_event(
            actor=requester.actor,
            action="registration.accepted" if auto else "registration.pending",
            object_type="registration_request",
            object_id=registration_id,
            after=_audit_after(requester, reg_request, verdict) | {"keys": storable(keys_audit(md, fetched))},
            reason=verdict.error_description[:2000],
            policy_version=verdict.policy_version,
        )
        if not insert_with_event(
            reg_request, event, token_id=token_id, now=now, spawn=guarded_spawn, statement_use=statement_use
        ):
            raise lost()
        if spawn is not None and parent is not None:  # one is set exactly when the other is
            audit_record(
                actor=requester.actor,
                action="client.spawn",
                object_type="client",
                object_id=parent.registration_id,
                after={
                    "child": registration_id,
                    "child_state": reg_request.state,
                    "children_spawned": spawn.count,
                    "max_children_per_parent": spawn_limit,
                    "granted_scopes": reg_request.granted_scopes,
                },
                reason=f"spawned {registration_id} ({spawn.count} of {spawn_limit})",
                policy_version=verdict.policy_version,
            )
    return Submission(reg_request=reg_request, verdict=verdict, client=client, registration_access_token=plaintext)
