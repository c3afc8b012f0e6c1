"""Decisions on registration, renewal, CIMD document change and adoption requests: approve, deny, withdraw.

Separation of duties and four-eyes live here, never in views: the HTML queue, the API and any command call
these functions and map the exception classes (``approvals.services.errors``) onto HTTP statuses. Each is one
transaction with one audit event; the request row is locked first, so concurrent deciders queue up, and a
state change is allowed only where ``approvals.choices.REQUEST_TRANSITIONS`` allows it. Each returns the
request as it changed it (the caller's instance is left as it was).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.choices import REQUEST_TRANSITIONS, DecisionKind, RequestKind, RequestState
from approvals.cimd.pinning import pin_change_apply
from approvals.conditions import approval_window_closed
from approvals.models import Decision, RegistrationRequest
from approvals.policy_store import active_policy
from approvals.services.clients import request_client_adopt, request_client_create
from approvals.services.errors import DecisionConflict, DecisionForbidden, DecisionInvalid
from inventory.choices import RiskTier
from inventory.lifecycle import LifecycleError, client_apply_renewal
from inventory.models import IdPConnection
from inventory.quotas import OwnerQuotaExceeded
from inventory.services import NotAdoptable
from portal.audit import Actor, audit_record
from portal.roles import can_approve

MIN_TTL_SECONDS = 60


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


def request_parties(reg_request: RegistrationRequest) -> set[int]:
    """User ids on the requesting side: owner/sponsor, whoever pre-registered it, token owner, issuer rule owner,
    parent's owner."""
    ids = {reg_request.owner_id, reg_request.submitted_by_id}
    if reg_request.token is not None:
        ids.add(reg_request.token.owner_id)
    if reg_request.issuer is not None:
        ids.add(reg_request.issuer.owner_id)
    if reg_request.parent_client is not None:
        ids.add(reg_request.parent_client.owner_id)
    return {pk for pk in ids if pk is not None}


def _withdrawers(reg_request: RegistrationRequest) -> set[int]:
    """Who may withdraw: the request's owner/sponsor, whoever pre-registered it and the owner of the credential
    it was made with."""
    ids = {reg_request.owner_id, reg_request.submitted_by_id}
    if reg_request.token is not None:
        ids.add(reg_request.token.owner_id)
    if reg_request.issuer is not None:
        ids.add(reg_request.issuer.owner_id)
    return {pk for pk in ids if pk is not None}


def _check_decider(reg_request: RegistrationRequest, principal):
    user = _resolve_person(principal)
    if user.pk in request_parties(reg_request):
        raise DecisionForbidden("you requested or sponsor this client and cannot decide it; withdraw it instead")
    if not can_approve(user):
        raise DecisionForbidden("only approvers can decide registration requests")
    return user


def decision_blocker(reg_request: RegistrationRequest, user) -> str | None:
    """Why ``user`` cannot decide ``reg_request`` right now, or None. For pages that hide the decide form;
    the services re-check everything under the row lock. Uses ``reg_request.decisions.all()`` (prefetched)."""
    if reg_request.state != RequestState.PENDING:
        return f"This request is {reg_request.get_state_display().lower()}."
    try:
        _check_decider(reg_request, user)
    except DecisionForbidden as exc:
        return str(exc).capitalize() + "."
    if any(d.approver_id == user.pk for d in reg_request.decisions.all()):
        return "You already decided this request; the next approval must come from someone else."
    return None


def _lock(reg_request: RegistrationRequest) -> RegistrationRequest:
    """Lock the request row for the rest of the transaction; concurrent deciders queue up here."""
    return (
        RegistrationRequest.objects.select_for_update(of=("self",))
        .select_related("token", "issuer", "parent_client")
        .get(pk=reg_request.pk)
    )


def _require_transition(locked: RegistrationRequest, target: str) -> None:
    """DecisionConflict unless ``REQUEST_TRANSITIONS`` lets the locked request move to ``target``."""
    if target not in REQUEST_TRANSITIONS.get(locked.state, ()):
        raise DecisionConflict(f"request is already {locked.state}")


def _snapshot(reg_request: RegistrationRequest) -> dict:
    return {
        "state": reg_request.state,
        "granted_scopes": list(reg_request.granted_scopes or reg_request.requested_scopes),
        "granted_ttl": reg_request.granted_ttl,
        "approvals": reg_request.decisions.filter(kind=DecisionKind.APPROVE).count(),
    }


@transaction.atomic
def request_approve(
    *,
    reg_request: RegistrationRequest,
    approver,
    reason: str,
    scopes: list[str] | None = None,
    ttl_seconds: int | None = None,
) -> RegistrationRequest:
    """Record one approval; on the last one needed, approve the request and create its client.

    ``scopes`` and ``ttl_seconds`` may only narrow what is currently granted (later approvers see
    earlier narrowing). Raises DecisionForbidden / DecisionConflict / DecisionInvalid.
    """
    locked = _lock(reg_request)
    user = _check_decider(locked, approver)  # who first: a 403 never reveals the request's state
    _require_transition(locked, RequestState.APPROVED)
    reason = (reason or "").strip()
    if locked.risk_tier == RiskTier.HIGH and not reason:
        raise DecisionInvalid("a reason is required to approve a high-risk request")
    if locked.risk_tier == RiskTier.HIGH and (closed := approval_window_closed(timezone.now(), locked)):
        raise DecisionConflict(closed)  # outside the working window the request waits (approvals.conditions)
    if locked.decisions.filter(approver=user).exists():
        raise DecisionConflict("you already decided this request; a second approval must come from someone else")

    current_scopes = list(locked.granted_scopes or locked.requested_scopes)
    current_ttl = locked.granted_ttl or locked.requested_ttl or active_policy().ttl_ceiling(locked.risk_tier)
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
            "client": locked.client.registration_id if locked.client is not None else None,
        },
        reason=reason,
        policy_version=locked.policy_version,
    )
    if locked.state == RequestState.APPROVED:
        _after_commit_notify_owner(locked.pk)
    return locked


def _finalize(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Approve a locked pending request in the caller's transaction.

    A registration creates its client in provisioning (client_create writes the OutboxEntry) and links
    it; a renewal extends the existing client through the lifecycle service instead.
    """
    if locked.kind == RequestKind.RENEWAL:
        _finalize_renewal(locked, actor=actor, reason=reason)
        return
    if locked.kind == RequestKind.CIMD_CHANGE:
        _finalize_cimd_change(locked, actor=actor, reason=reason)
        return
    if locked.kind == RequestKind.ADOPTION:
        _finalize_adoption(locked, actor=actor, reason=reason)
        return
    idp = locked.idp or IdPConnection.objects.filter(is_default=True, enabled=True).first()
    if idp is None:
        raise DecisionConflict("no identity provider is configured for this request")
    now = timezone.now()
    try:
        client = request_client_create(reg_request=locked, idp=idp, actor=actor, reason=reason, now=now)
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


def _finalize_adoption(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Approve an adoption: the shadow client the request names becomes managed in place (no new IdP client)."""
    now = timezone.now()
    try:
        request_client_adopt(reg_request=locked, actor=actor, reason=reason, now=now)
    except NotAdoptable as exc:
        raise DecisionConflict(f"cannot adopt: {exc}") from exc
    except OwnerQuotaExceeded as exc:
        raise DecisionConflict(
            f"cannot approve yet: {exc.describe('the owner')}. The request stays pending; approve it once the "
            "owner has retired a client or an admin has raised the limit"
        ) from exc
    locked.state = RequestState.APPROVED
    locked.decided_at = now
    locked.decision_reason = reason
    locked.save(update_fields=["state", "decided_at", "decision_reason", "granted_scopes", "granted_ttl"])


def _finalize_renewal(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Approve a renewal: the lifecycle extends the client by the granted lifetime, narrows it to the granted
    scopes (an approver's narrowing reaches the IdP) and records both as its new approved ceiling."""
    client, ttl = locked.client, locked.granted_ttl
    if client is None:
        raise DecisionConflict("this renewal request names no client")
    assert ttl is not None  # request_approve grants a lifetime before it finalizes
    try:
        client_apply_renewal(
            client=client,
            ttl_seconds=ttl,
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


def _finalize_cimd_change(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Approve a widened Client ID Metadata Document: the client takes the reviewed document and it is pinned."""
    try:
        pin_change_apply(locked, actor=actor, reason=reason)
    except ValueError as exc:
        raise DecisionConflict(f"cannot apply the document change: {exc}")
    locked.state = RequestState.APPROVED
    locked.decided_at = timezone.now()
    locked.decision_reason = reason
    locked.save(update_fields=["state", "decided_at", "decision_reason", "granted_scopes", "granted_ttl"])


@transaction.atomic
def request_deny(*, reg_request: RegistrationRequest, approver, reason: str) -> RegistrationRequest:
    """Deny a pending request. One deny by any eligible approver ends it."""
    locked = _lock(reg_request)
    user = _check_decider(locked, approver)
    _require_transition(locked, RequestState.DENIED)
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
    return locked


@transaction.atomic
def request_withdraw(*, reg_request: RegistrationRequest, actor, reason: str = "") -> RegistrationRequest:
    """The owner (or the token's owner) withdraws their own pending request."""
    locked = _lock(reg_request)
    user = _resolve_person(actor)
    if user.pk not in _withdrawers(locked):
        raise DecisionForbidden("only the owner of a request can withdraw it")
    _withdraw(locked, actor=Actor.user(user), reason=(reason or "").strip() or "withdrawn by the owner")
    return locked


@transaction.atomic
def request_withdraw_by_registrant(*, reg_request: RegistrationRequest, actor: Actor) -> RegistrationRequest:
    """The agent that registered withdraws its own pending request (RFC 7592 DELETE).

    The caller has already authenticated the request's registration access token: holding it is the
    authority here, so there is no person to check.
    """
    locked = _lock(reg_request)
    _withdraw(locked, actor=actor, reason="RFC 7592 delete by the agent")
    return locked


def _withdraw(locked: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    _require_transition(locked, RequestState.WITHDRAWN)
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


def _after_commit_notify_owner(request_pk: int) -> None:
    def send():
        from approvals.notifications import notify_owner_of_decision

        notify_owner_of_decision(request_pk)

    transaction.on_commit(send)
