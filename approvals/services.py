"""Intake and decision writes. Every function here is one transaction with one audit event."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.choices import DecisionKind, RequestKind, RequestState
from approvals.models import Decision, InitialAccessToken, RegistrationRequest
from approvals.policy_store import active_policy
from inventory.choices import RiskTier
from inventory.lifecycle import LifecycleError, client_apply_renewal
from inventory.models import Client, IdPConnection, ScopeDefinition, Team
from inventory.quotas import OwnerQuotaExceeded, owner_quota_hold
from inventory.services import client_create
from portal.audit import Actor, audit_record, audit_record_many
from portal.crypto import hash_token, new_token
from portal.roles import can_approve


class ServiceError(Exception):
    """A business rule refused the action; the message is safe to show to the user."""


class TokenError(ServiceError):
    pass


TOKEN_PREFIX = "rat"  # "registrar access token" — recognisable in secret scanners
MAX_TOKEN_TTL_SECONDS = 365 * 24 * 3600


@transaction.atomic
def token_mint(
    *,
    actor: Actor,
    owner,
    purpose: str,
    scopes: list[str],
    max_ttl_seconds: int,
    max_uses: int = 1,
    internal_only: bool = False,
    valid_for: timedelta = timedelta(days=7),
    team: Team | None = None,
    idp: IdPConnection | None = None,
) -> tuple[InitialAccessToken, str]:
    """Mint an initial access token. Returns the row and the plaintext, which is never stored."""
    problems = []
    purpose = (purpose or "").strip()
    if len(purpose) < 3:
        problems.append("purpose must say what the token is for (at least 3 characters)")
    scopes = sorted(set(scopes))
    if not scopes:
        problems.append("at least one scope is required")
    known = set(ScopeDefinition.objects.filter(name__in=scopes, is_active=True).values_list("name", flat=True))
    unknown = [s for s in scopes if s not in known]
    if unknown:
        problems.append("unknown scope(s): " + ", ".join(unknown))
    if not (60 <= max_ttl_seconds <= MAX_TOKEN_TTL_SECONDS):
        problems.append(f"max TTL must be between 60 and {MAX_TOKEN_TTL_SECONDS} seconds")
    if not (1 <= max_uses <= 10000):
        problems.append("max uses must be between 1 and 10000")
    if not owner.is_active:
        problems.append("the owner is not active")
    if problems:
        raise TokenError("; ".join(problems))
    plaintext = new_token(TOKEN_PREFIX)
    token = InitialAccessToken.objects.create(
        owner=owner,
        team=team,
        purpose=purpose,
        prefix=plaintext[:12],
        token_hash=hash_token(plaintext),
        allowed_scopes=scopes,
        max_ttl_seconds=max_ttl_seconds,
        max_uses=max_uses,
        internal_only=internal_only,
        idp=idp,
        expires_at=timezone.now() + valid_for,
    )
    audit_record(
        actor=actor,
        action="token.mint",
        object_type="initial_access_token",
        object_id=token.pk,
        after={
            "owner": owner.get_username(),
            "purpose": purpose,
            "scopes": scopes,
            "max_ttl_seconds": max_ttl_seconds,
            "max_uses": max_uses,
            "internal_only": internal_only,
            "prefix": token.prefix,
        },
    )
    return token, plaintext


@transaction.atomic
def token_revoke(*, actor: Actor, token: InitialAccessToken, reason: str = "") -> InitialAccessToken:
    locked = InitialAccessToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is not None:
        raise TokenError("token already revoked")
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor, action="token.revoke", object_type="initial_access_token", object_id=locked.pk, reason=reason
    )
    return locked


# --- decisions ---------------------------------------------------------------------------------
#
# Separation of duties and four-eyes live here, never in views: the HTML queue, the API and any
# command call these functions and map the exception classes onto HTTP statuses.


class DecisionError(ServiceError):
    """A decision was refused. ``status_code`` is the HTTP status interfaces should answer with."""

    status_code = 400


class DecisionForbidden(DecisionError):
    """This principal may not decide this request (role, separation of duties, non-human)."""

    status_code = 403


class DecisionConflict(DecisionError):
    """The request is no longer pending, or this approver already decided it."""

    status_code = 409


class DecisionInvalid(DecisionError):
    """The decision itself is malformed: missing reason, widened scopes or TTL."""

    status_code = 400


MIN_TTL_SECONDS = 60


def _tier_ttl(risk_tier: str) -> int:
    """The fallback lifetime when neither the verdict nor the agent named one: the tier's ceiling under
    the active policy (whose defaults are ``inventory.ceilings.DEFAULT_TTL_CEILINGS``)."""
    config = active_policy()
    return {RiskTier.LOW: config.low_ttl_seconds, RiskTier.MEDIUM: config.medium_ttl_seconds}.get(
        risk_tier, config.high_ttl_seconds
    )


def _resolve_person(principal):
    """Return the User behind ``principal`` (a User or an audit Actor), or raise if it is not a person."""
    if isinstance(principal, Actor):
        if not principal.is_human:
            raise DecisionForbidden(f"{principal.type} principals cannot decide registration requests")
        principal = get_user_model().objects.filter(pk=principal.id).first()
        if principal is None:
            raise DecisionForbidden("unknown user")
    if principal is None or not getattr(principal, "is_authenticated", False):
        raise DecisionForbidden("sign in to decide")
    if getattr(principal, "is_service_account", False):
        raise DecisionForbidden("service accounts cannot decide registration requests")
    return principal


def request_parties(request: RegistrationRequest) -> set[int]:
    """User ids on the requesting side: owner/sponsor, token owner, issuer rule owner, parent's owner."""
    ids = {request.owner_id}
    if request.token_id:
        ids.add(request.token.owner_id)
    if request.issuer_id:
        ids.add(request.issuer.owner_id)
    if request.parent_client_id:
        ids.add(request.parent_client.owner_id)
    ids.discard(None)
    return ids


def _withdrawers(request: RegistrationRequest) -> set[int]:
    """Who may withdraw: the request's owner/sponsor and the owner of the credential it was made with."""
    ids = {request.owner_id}
    if request.token_id:
        ids.add(request.token.owner_id)
    if request.issuer_id:
        ids.add(request.issuer.owner_id)
    ids.discard(None)
    return ids


def _check_decider(request: RegistrationRequest, principal):
    user = _resolve_person(principal)
    if user.pk in request_parties(request):
        raise DecisionForbidden("you requested or sponsor this client and cannot decide it; withdraw it instead")
    if not can_approve(user):
        raise DecisionForbidden("only approvers can decide registration requests")
    return user


def decision_blocker(request: RegistrationRequest, user) -> str | None:
    """Why ``user`` cannot decide ``request`` right now, or None. For pages that hide the decide form;
    the services re-check everything under the row lock. Uses ``request.decisions.all()`` (prefetched)."""
    if request.state != RequestState.PENDING:
        return f"This request is {request.get_state_display().lower()}."
    try:
        _check_decider(request, user)
    except DecisionForbidden as exc:
        return str(exc).capitalize() + "."
    if any(d.approver_id == user.pk for d in request.decisions.all()):
        return "You already decided this request; the next approval must come from someone else."
    return None


def _lock(request: RegistrationRequest) -> RegistrationRequest:
    """Lock the request row for the rest of the transaction; concurrent deciders queue up here."""
    return (
        RegistrationRequest.objects.select_for_update(of=("self",))
        .select_related("token", "issuer", "parent_client")
        .get(pk=request.pk)
    )


def _require_pending(locked: RegistrationRequest) -> None:
    if locked.state != RequestState.PENDING:
        raise DecisionConflict(f"request is already {locked.state}")


def _lock_pending(request: RegistrationRequest) -> RegistrationRequest:
    locked = _lock(request)
    _require_pending(locked)
    return locked


def _snapshot(request: RegistrationRequest) -> dict:
    return {
        "state": request.state,
        "granted_scopes": list(request.granted_scopes or request.requested_scopes),
        "granted_ttl": request.granted_ttl,
        "approvals": request.decisions.filter(kind=DecisionKind.APPROVE).count(),
    }


def _sync_back(target: RegistrationRequest, locked: RegistrationRequest) -> RegistrationRequest:
    """Copy the locked row's fields back onto the caller's instance so it sees the outcome."""
    for field in locked._meta.concrete_fields:
        setattr(target, field.attname, getattr(locked, field.attname))
    return target


@transaction.atomic
def request_approve(
    *,
    request: RegistrationRequest,
    approver,
    reason: str,
    scopes: list[str] | None = None,
    ttl_seconds: int | None = None,
) -> RegistrationRequest:
    """Record one approval; on the last one needed, approve the request and create its client.

    ``scopes`` and ``ttl_seconds`` may only narrow what is currently granted (later approvers see
    earlier narrowing). Raises DecisionForbidden / DecisionConflict / DecisionInvalid.
    """
    locked = _lock(request)
    user = _check_decider(locked, approver)  # who first: a 403 never reveals the request's state
    _require_pending(locked)
    reason = (reason or "").strip()
    if locked.risk_tier == RiskTier.HIGH and not reason:
        raise DecisionInvalid("a reason is required to approve a high-risk request")
    if locked.decisions.filter(approver=user).exists():
        raise DecisionConflict("you already decided this request; a second approval must come from someone else")

    current_scopes = list(locked.granted_scopes or locked.requested_scopes)
    current_ttl = locked.granted_ttl or locked.requested_ttl or _tier_ttl(locked.risk_tier)
    new_scopes = current_scopes
    if scopes is not None:
        wanted = sorted(set(scopes))
        widened = sorted(set(wanted) - set(current_scopes))
        if widened:
            raise DecisionInvalid("approvals may only narrow scopes; not requested: " + ", ".join(widened))
        if not wanted:
            raise DecisionInvalid("keep at least one scope, or deny the request")
        new_scopes = wanted
    new_ttl = current_ttl
    if ttl_seconds is not None:
        if ttl_seconds > current_ttl:
            raise DecisionInvalid(f"approvals may only shorten the lifetime (at most {current_ttl} seconds)")
        if ttl_seconds < MIN_TTL_SECONDS:
            raise DecisionInvalid(f"lifetime must be at least {MIN_TTL_SECONDS} seconds")
        new_ttl = ttl_seconds

    before = _snapshot(locked)
    try:
        with transaction.atomic():
            Decision.objects.create(
                request=locked,
                approver=user,
                kind=DecisionKind.APPROVE,
                reason=reason,
                granted_scopes=new_scopes if scopes is not None else None,
                granted_ttl=new_ttl if ttl_seconds is not None else None,
            )
    except IntegrityError:
        raise DecisionConflict("you already decided this request")
    locked.granted_scopes = new_scopes
    locked.granted_ttl = new_ttl
    approvals = before["approvals"] + 1
    needed = max(locked.approvals_needed, 1)
    action = "request.approve"
    if approvals >= needed:
        action = "request.approved"
        _finalize(locked, actor=Actor.user(user), reason=reason)
    else:
        locked.save(update_fields=["granted_scopes", "granted_ttl"])
    audit_record(
        actor=Actor.user(user),
        action=action,
        object_type="registration_request",
        object_id=locked.public_id,
        before=before,
        after={
            "state": locked.state,
            "granted_scopes": new_scopes,
            "granted_ttl": new_ttl,
            "approvals": approvals,
            "approvals_needed": needed,
            "client": locked.client.registration_id if locked.client_id else None,
        },
        reason=reason,
        policy_version=locked.policy_version,
    )
    if locked.state == RequestState.APPROVED:
        _after_commit_notify_owner(locked.pk)
    return _sync_back(request, locked)


def _finalize(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Approve a locked pending request in the caller's transaction.

    A registration creates its client in provisioning (client_create writes the OutboxEntry) and links
    it; a renewal extends the existing client through the lifecycle service instead.
    """
    if locked.kind == RequestKind.RENEWAL:
        _finalize_renewal(locked, actor=actor, reason=reason)
        return
    idp = locked.idp or IdPConnection.objects.filter(is_default=True, enabled=True).first()
    if idp is None:
        raise DecisionConflict("no identity provider is configured for this request")
    now = timezone.now()
    try:
        client = request_client_create(request=locked, idp=idp, actor=actor, reason=reason, now=now)
    except OwnerQuotaExceeded as exc:
        # The caller's transaction rolls back (this approval is not recorded): the request stays pending.
        raise DecisionConflict(
            f"cannot approve yet: {exc.describe('the owner')}. The request stays pending; approve it once the "
            "owner has retired a client or an admin has raised the limit"
        ) from exc
    locked.state = RequestState.APPROVED
    locked.client = client
    locked.decided_at = now
    locked.decision_reason = reason
    locked.save(update_fields=["state", "client", "decided_at", "decision_reason", "granted_scopes", "granted_ttl"])


def request_client_create(
    *,
    request: RegistrationRequest,
    idp: IdPConnection,
    actor: Actor,
    reason: str,
    now,
    owner_limit: int | None = None,
    nudge_worker: bool = True,
) -> Client:
    """The client an approved registration request becomes, in ``provisioning`` with its outbox CREATE.

    The one mapping from request to client: used by policy auto-approval (intake) and by the final human
    approval, so both paths produce the same client for the same request. What was approved — the granted
    scopes, the granted lifetime, the audiences — becomes the client's approved ceiling: renewing inside it
    may be direct, beyond it needs people again. Runs in the caller's transaction, which must not have appended
    to the audit chain yet: it first takes the owner's quota lock and raises OwnerQuotaExceeded (nothing
    written) when the owner has no room left (``inventory.quotas``). ``owner_limit`` defaults to the active
    policy's ``max_live_clients_per_owner``. ``nudge_worker=False``: the caller delivers the CREATE itself after
    the commit (see ``client_create``).
    """
    owner_quota_hold(owner_id=request.owner_id, limit=owner_limit)
    metadata = dict(request.metadata or {})
    spiffe_id = request.statement_subject if request.statement_subject.startswith("spiffe://") else ""
    return client_create(
        actor=actor,
        idp=idp,
        name=request.client_name or metadata.get("client_name") or f"agent {request.public_id}",
        owner=request.owner,
        team=request.team,
        purpose=request.purpose,
        scopes=list(request.granted_scopes or request.requested_scopes),
        expires_at=now + timedelta(seconds=request.granted_ttl),
        registration_id=request.public_id,
        risk_tier=request.risk_tier or RiskTier.MEDIUM,
        created_via=request.via,
        policy_version=request.policy_version,
        metadata=metadata,
        audiences=list(request.audiences or []),
        internal_only=request.internal_only,
        auth_method=metadata.get("token_endpoint_auth_method") or "private_key_jwt",
        jwks=metadata.get("jwks") or request.fetched_jwks,  # keys behind a jwks_uri: as fetched and vetted
        jwks_uri=metadata.get("jwks_uri") or "",
        software_id=request.software_id,
        software_version=metadata.get("software_version") or "",
        spiffe_id=spiffe_id,
        nudge_worker=nudge_worker,
        parent=request.parent_client,
        reason=reason,
        ceiling_ttl_seconds=request.granted_ttl,
    )


def _finalize_renewal(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Approve a renewal: the lifecycle extends the client by the granted lifetime, narrows it to the granted
    scopes (an approver's narrowing reaches the IdP) and records both as its new approved ceiling."""
    if locked.client_id is None:
        raise DecisionConflict("this renewal request names no client")
    try:
        client_apply_renewal(
            client=locked.client,
            ttl_seconds=int(locked.granted_ttl),
            actor=actor,
            scopes=list(locked.granted_scopes or locked.requested_scopes),
            audiences=list(locked.audiences or []),
            reason=reason or "renewal approved",
            policy_version=locked.policy_version,
        )
    except LifecycleError as exc:
        raise DecisionConflict(f"cannot renew: {exc}")
    locked.state = RequestState.APPROVED
    locked.decided_at = timezone.now()
    locked.decision_reason = reason
    locked.save(update_fields=["state", "decided_at", "decision_reason", "granted_scopes", "granted_ttl"])


def request_finalize(*, request: RegistrationRequest, actor: Actor, reason: str = "") -> RegistrationRequest:
    """Approve a pending request without a human decision (e.g. policy auto-approval by intake).

    Locks the row; one transaction, one ``request.approved`` audit event (plus ``client.create``).
    """
    with transaction.atomic():
        locked = _lock_pending(request)
        if not locked.granted_ttl:
            locked.granted_ttl = locked.requested_ttl or _tier_ttl(locked.risk_tier)
        if not locked.granted_scopes:
            locked.granted_scopes = list(locked.requested_scopes)
        _finalize(locked, actor=actor, reason=reason)
        audit_record(
            actor=actor,
            action="request.approved",
            object_type="registration_request",
            object_id=locked.public_id,
            before={"state": RequestState.PENDING},
            after={
                "state": locked.state,
                "client": locked.client.registration_id,
                "granted_scopes": locked.granted_scopes,
                "granted_ttl": locked.granted_ttl,
            },
            reason=reason,
            policy_version=locked.policy_version,
        )
    return _sync_back(request, locked)


@transaction.atomic
def request_deny(*, request: RegistrationRequest, approver, reason: str) -> RegistrationRequest:
    """Deny a pending request. One deny by any eligible approver ends it."""
    locked = _lock(request)
    user = _check_decider(locked, approver)
    _require_pending(locked)
    reason = (reason or "").strip()
    if not reason:
        raise DecisionInvalid("a reason is required to deny a request")
    if locked.decisions.filter(approver=user).exists():
        raise DecisionConflict("you already decided this request")
    before = _snapshot(locked)
    try:
        with transaction.atomic():
            Decision.objects.create(request=locked, approver=user, kind=DecisionKind.DENY, reason=reason)
    except IntegrityError:
        raise DecisionConflict("you already decided this request")
    locked.state = RequestState.DENIED
    locked.decided_at = timezone.now()
    locked.decision_reason = reason
    locked.save(update_fields=["state", "decided_at", "decision_reason"])
    audit_record(
        actor=Actor.user(user),
        action="request.deny",
        object_type="registration_request",
        object_id=locked.public_id,
        before=before,
        after={"state": locked.state},
        reason=reason,
        policy_version=locked.policy_version,
    )
    _after_commit_notify_owner(locked.pk)
    return _sync_back(request, locked)


@transaction.atomic
def request_withdraw(*, request: RegistrationRequest, actor, reason: str = "") -> RegistrationRequest:
    """The owner (or the token's owner) withdraws their own pending request."""
    locked = _lock(request)
    user = _resolve_person(actor)
    if user.pk not in _withdrawers(locked):
        raise DecisionForbidden("only the owner of a request can withdraw it")
    _withdraw(locked, actor=Actor.user(user), reason=(reason or "").strip() or "withdrawn by the owner")
    return _sync_back(request, locked)


@transaction.atomic
def request_withdraw_by_registrant(*, request: RegistrationRequest, actor: Actor) -> RegistrationRequest:
    """The agent that registered withdraws its own pending request (RFC 7592 DELETE).

    The caller has already authenticated the request's registration access token: holding it is the
    authority here, so there is no person to check.
    """
    locked = _lock(request)
    _withdraw(locked, actor=actor, reason="RFC 7592 delete by the agent")
    return _sync_back(request, locked)


def _withdraw(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    _require_pending(locked)
    locked.state = RequestState.WITHDRAWN
    locked.decided_at = timezone.now()
    locked.decision_reason = reason
    locked.save(update_fields=["state", "decided_at", "decision_reason"])
    audit_record(
        actor=actor,
        action="request.withdraw",
        object_type="registration_request",
        object_id=locked.public_id,
        before={"state": RequestState.PENDING},
        after={"state": locked.state},
        reason=reason,
        policy_version=locked.policy_version,
    )


def request_lapse_due(*, now=None, batch_size: int | None = None) -> int:
    """Lapse pending requests older than REGISTRAR_REQUEST_LAPSE_DAYS. Returns how many lapsed.

    Set-based and batched: each batch locks its rows with SKIP LOCKED (so concurrent sweeps and
    a concurrent decision never do the same row twice), flips them with one UPDATE and writes the
    audit events with one bulk append — one transaction per batch.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.REGISTRAR_REQUEST_LAPSE_DAYS)
    batch_size = batch_size or settings.REGISTRAR_SWEEP_BATCH_SIZE
    total = 0
    actor = Actor.system("sweep_lapsed")
    reason = f"no decision within {settings.REGISTRAR_REQUEST_LAPSE_DAYS} days"
    while True:
        with transaction.atomic():
            rows = list(
                RegistrationRequest.objects.pending()
                .filter(created_at__lt=cutoff)
                .order_by("created_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", "public_id", "policy_version")[:batch_size]
            )
            if not rows:
                return total
            RegistrationRequest.objects.filter(pk__in=[r[0] for r in rows], state=RequestState.PENDING).update(
                state=RequestState.LAPSED, decided_at=now, decision_reason=reason
            )
            audit_record_many(
                [
                    {
                        "actor": actor,
                        "action": "request.lapse",
                        "object_type": "registration_request",
                        "object_id": public_id,
                        "before": {"state": RequestState.PENDING},
                        "after": {"state": RequestState.LAPSED},
                        "reason": reason,
                        "policy_version": policy_version,
                    }
                    for _pk, public_id, policy_version in rows
                ]
            )
            total += len(rows)
        if len(rows) < batch_size:
            return total


def _after_commit_notify_owner(request_pk: int) -> None:
    def send():
        from approvals.notifications import notify_owner_of_decision

        notify_owner_of_decision(request_pk)

    transaction.on_commit(send)
