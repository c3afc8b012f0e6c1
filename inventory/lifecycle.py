"""Client lifecycle: the only code that changes ``Client.state``.

Each transition locks the client row, checks the transition map in ``inventory.choices``, writes
one audit event and, where the IdP must follow, an outbox entry — all in one transaction.

Also here: the owner actions (renew, retire, suspend/resume, rotate key, transfer offer/accept/decline,
orphan take-over; a new owner's live-client quota is checked under their lock, ``inventory.quotas``), the
flags the sweeps set (orphaned, stale), the hook delivery calls when the IdP confirms a disable (:func:`client_record_idp_disabled`, which records the expiry overshoot), and the
set-based :func:`clients_transition_many` used by sweeps and break glass.

Renewal design choice: low and medium tiers renew in place. High tier, and any client flagged stale
or orphaned, is NOT extended here; a pending ``approvals.RegistrationRequest(kind="renewal")`` is
written through ``apps.get_model`` (inventory never imports approvals code) so it lands in the same
review queue as registrations, and the approvals app calls :func:`client_apply_renewal` on approval.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory.choices import CLIENT_TRANSITIONS, ENDED_STATES, LIVE_STATES, ClientState, OutboxOperation, RiskTier
from inventory.models import Client, OutboxEntry, TransferOffer, TransferState
from inventory.outbox import outbox_enqueue
from portal import roles
from portal.audit import Actor, audit_record, audit_record_many


class LifecycleError(Exception):
    """A lifecycle rule refused the change (e.g. an illegal transition)."""


class IllegalTransition(LifecycleError):
    def __init__(self, client: Client | None, current: str, target: str):
        self.current, self.target = current, target
        name = f"client {client.registration_id}" if client is not None else "client"
        super().__init__(f"{name} cannot go from {current} to {target}")


# What the IdP must do when a client enters a state.
_IDP_OPERATION_ON_ENTER: dict[str, str] = {
    ClientState.SUSPENDED: OutboxOperation.DISABLE,
    ClientState.EXPIRED: OutboxOperation.DISABLE,
    ClientState.RETIRED: OutboxOperation.DELETE,
    ClientState.REVOKED: OutboxOperation.DELETE,
}


def check_transition(current: str, target: str, client: Client | None = None) -> None:
    if target not in CLIENT_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(client, current, target)


def client_snapshot(client: Client) -> dict[str, Any]:
    return {
        "state": client.state,
        "owner": client.owner_id,
        "scopes": list(client.scopes),
        "expires_at": client.expires_at.isoformat() if client.expires_at else None,
        "risk_tier": client.risk_tier,
    }


def _apply_state(client: Client, target: str, now) -> list[str]:
    changed = ["state", "state_changed_at"]
    client.state = target
    client.state_changed_at = now
    if target == ClientState.ACTIVE and client.activated_at is None:
        client.activated_at = now
        changed.append("activated_at")
    if target in ENDED_STATES and client.ended_at is None:
        client.ended_at = now
        changed.append("ended_at")
    return changed


@transaction.atomic
def client_transition(
    *,
    client: Client,
    target: str,
    actor: Actor,
    reason: str = "",
    action: str | None = None,
    push_to_idp: bool = True,
    cascade: bool = True,
) -> Client:
    """Move one client to ``target`` (locking it), audit it, queue the IdP change.

    Retiring, revoking or expiring a parent ends its live descendants in the same transaction.
    """
    locked = Client.objects.select_for_update().get(pk=client.pk)
    check_transition(locked.state, target, locked)
    before = client_snapshot(locked)
    now = timezone.now()
    fields = _apply_state(locked, target, now)
    locked.save(update_fields=fields)
    audit_record(
        actor=actor,
        action=action or f"client.{target}",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked),
        reason=reason,
        policy_version=locked.policy_version,
    )
    operation = _IDP_OPERATION_ON_ENTER.get(target)
    if push_to_idp and operation:
        # Always queue: entries are delivered in order per client, so a delete after a pending
        # create removes what the create made, and a delete with nothing at the IdP is a no-op.
        outbox_enqueue(client=locked, operation=operation)
    if cascade and target in (ClientState.RETIRED, ClientState.REVOKED, ClientState.EXPIRED):
        descendant_target = ClientState.RETIRED if target == ClientState.EXPIRED else target
        for child in _live_children(locked):
            client_transition(
                client=child,
                target=descendant_target,
                actor=actor,
                reason=f"parent {locked.registration_id} {target}",
                action=f"client.{descendant_target}.cascade",
                push_to_idp=push_to_idp,
            )
    client.__dict__.update({f: getattr(locked, f) for f in fields})
    return locked


def _live_children(client: Client) -> Iterable[Client]:
    return Client.objects.filter(parent=client, state__in=LIVE_STATES).order_by("pk")


# ================================================================================================
# Owner actions (renew, retire, suspend/resume, rotate key, transfer) and the sweeps' set-based
# helpers. Person-facing services take ``user`` (the person acting; permissions are checked through
# ``portal.roles``) or an ``actor`` for system callers (sweeps, SCIM, break glass).
# ================================================================================================

logger = logging.getLogger(__name__)

# Tier TTL ceilings when the active policy row does not say otherwise (DESIGN.md "Policy").
DEFAULT_TTL_CEILINGS = {RiskTier.LOW: 86400, RiskTier.MEDIUM: 7 * 86400, RiskTier.HIGH: 86400}
# JWK members that only private (or symmetric) keys carry (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class PermissionRefused(LifecycleError):
    """The person may not do this to this client."""


def _actor(user, actor: Actor | None) -> Actor:
    if actor is not None:
        return actor
    if user is None:
        raise ValueError("pass user= (a person) or actor= (a system caller)")
    return Actor.user(user)


def _require_manage(user, client: Client) -> None:
    if user is not None and not roles.can_manage_client(user, client):
        raise PermissionRefused(f"you may not manage client {client.registration_id}")


def _lock(client: Client) -> Client:
    return Client.objects.select_for_update().get(pk=client.pk)


def _sync_instance(client: Client, locked: Client) -> None:
    client.__dict__.update({f.attname: getattr(locked, f.attname) for f in Client._meta.concrete_fields})


# --- renew ---------------------------------------------------------------------------------------

def tier_ttl_ceiling(risk_tier: str) -> int:
    """The tier's TTL ceiling (seconds) from the active ``approvals.Policy`` row, else the defaults."""
    thresholds: dict = {}
    try:
        policy_model = apps.get_model("approvals", "Policy")
        row = policy_model.objects.filter(is_active=True).only("thresholds").first()
        thresholds = (row.thresholds or {}) if row else {}
    except LookupError:  # approvals not installed (never in this project, but inventory must not need it)
        pass
    value = thresholds.get(f"{risk_tier}_ttl_seconds")
    if isinstance(value, int) and value > 0:
        return value
    return DEFAULT_TTL_CEILINGS.get(risk_tier, DEFAULT_TTL_CEILINGS[RiskTier.HIGH])


@dataclass
class RenewalOutcome:
    client: Client
    renewed: bool
    request: Any = None  # approvals.RegistrationRequest when the renewal needs review

    @property
    def needs_review(self) -> bool:
        return self.request is not None


def renewal_needs_review(client: Client) -> bool:
    """High tier, or a client flagged stale or orphaned, goes back through approval."""
    return client.risk_tier == RiskTier.HIGH or client.stale_at is not None or client.orphaned_at is not None


@transaction.atomic
def client_renew(
    *,
    client: Client,
    user=None,
    actor: Actor | None = None,
    ttl_seconds: int | None = None,
    reason: str = "",
    now: dt.datetime | None = None,
) -> RenewalOutcome:
    """Extend ``expires_at`` to now + up to the tier's TTL ceiling, or file a renewal request.

    Low and medium tier renew directly. High tier, and any client flagged stale or orphaned, gets a
    pending ``approvals.RegistrationRequest(kind="renewal")`` in the review queue instead: inventory
    writes that row through ``apps.get_model`` (it may not import approvals services), and approving it
    is the approvals app's job — the approver's decision then extends the client.
    """
    locked = _lock(client)
    _require_manage(user, locked)
    who = _actor(user, actor)
    if locked.state != ClientState.ACTIVE:
        raise LifecycleError(f"only an active client can be renewed (this one is {locked.state})")
    if ttl_seconds is not None and (not isinstance(ttl_seconds, int) or ttl_seconds <= 0):
        raise LifecycleError("the renewal lifetime must be a positive number of seconds")
    now = now or timezone.now()
    ceiling = tier_ttl_ceiling(locked.risk_tier)
    ttl = min(ttl_seconds or ceiling, ceiling)
    if renewal_needs_review(locked):
        request = _file_renewal_request(locked, who, ttl, reason)
        _sync_instance(client, locked)
        return RenewalOutcome(client=locked, renewed=False, request=request)
    before = client_snapshot(locked)
    locked.expires_at = now + dt.timedelta(seconds=ttl)
    locked.renewals += 1
    locked.save(update_fields=["expires_at", "renewals"])
    audit_record(
        actor=who, action="client.renew", object_type="client", object_id=locked.registration_id,
        before=before, after=client_snapshot(locked) | {"ttl_seconds": ttl}, reason=reason,
        policy_version=locked.policy_version,
    )
    _sync_instance(client, locked)
    return RenewalOutcome(client=locked, renewed=True)


@transaction.atomic
def client_apply_renewal(*, client: Client, ttl_seconds: int, actor: Actor, reason: str = "",
                         policy_version: int | None = None, now: dt.datetime | None = None) -> Client:
    """Extend a client once its renewal request is approved (called by the approvals app).

    The lifetime is clamped to the tier ceiling; the stale flag clears (someone vouched for it) and
    the orphan flag clears only if the client has an active owner again.
    """
    locked = _lock(client)
    if locked.state != ClientState.ACTIVE:
        raise LifecycleError(f"only an active client can be renewed (this one is {locked.state})")
    if not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise LifecycleError("the renewal lifetime must be a positive number of seconds")
    now = now or timezone.now()
    ttl = min(ttl_seconds, tier_ttl_ceiling(locked.risk_tier))
    before = client_snapshot(locked) | {"stale_at": locked.stale_at, "orphaned_at": locked.orphaned_at}
    locked.expires_at = now + dt.timedelta(seconds=ttl)
    locked.renewals += 1
    locked.stale_at = None
    if locked.owner is not None and locked.owner.is_active:
        locked.orphaned_at = None
    locked.save(update_fields=["expires_at", "renewals", "stale_at", "orphaned_at"])
    audit_record(
        actor=actor, action="client.renew.approved", object_type="client", object_id=locked.registration_id,
        before=before, after=client_snapshot(locked) | {"ttl_seconds": ttl}, reason=reason,
        policy_version=policy_version if policy_version is not None else locked.policy_version,
    )
    _sync_instance(client, locked)
    return locked


def _file_renewal_request(client: Client, actor: Actor, ttl: int, reason: str):
    """One pending renewal per client: the partial unique index ``request_one_pending_renewal`` decides (the
    check before it only saves a failed insert in the common case)."""
    request_model = apps.get_model("approvals", "RegistrationRequest")
    pending = request_model.objects.filter(client=client, kind="renewal", state="pending")
    already = LifecycleError(f"a renewal of {client.registration_id} is already waiting for review")
    if pending.exists():
        raise already
    why = []
    if client.risk_tier == RiskTier.HIGH:
        why.append("high-risk tier")
    if client.stale_at is not None:
        why.append("flagged stale")
    if client.orphaned_at is not None:
        why.append("orphaned (owner left)")
    try:
        with transaction.atomic():
            request = _create_renewal_request(request_model, client, ttl, why)
    except IntegrityError as exc:
        if pending.exists():  # committed by a concurrent renewal since the check above
            raise already from exc
        raise
    audit_record(
        actor=actor, action="client.renewal_requested", object_type="client", object_id=client.registration_id,
        before=client_snapshot(client), after={"request": request.public_id, "ttl_seconds": ttl, "why": why},
        reason=reason, policy_version=client.policy_version,
    )
    return request


def _create_renewal_request(request_model, client: Client, ttl: int, why: list[str]):
    from inventory.services import new_registration_id  # services imports this module

    return request_model.objects.create(
        public_id=new_registration_id(),
        kind="renewal",
        state="pending",
        via=client.created_via,
        client=client,
        client_name=client.name,
        software_id=client.software_id,
        purpose=client.purpose,
        requested_scopes=list(client.scopes),
        requested_ttl=ttl,
        audiences=list(client.audiences),
        internal_only=client.internal_only,
        idp=client.idp,
        owner=client.owner,
        team=client.team,
        parent_client=client.parent,
        policy_version=client.policy_version,
        risk_tier=client.risk_tier,
        outcome="review",
        reasons=[{"code": "renewal_review", "message": "renewal needs review: " + ", ".join(why)}],
        approvals_needed=2 if client.risk_tier == RiskTier.HIGH else 1,
        decision_reason="",
    )


# --- retire / suspend / resume ------------------------------------------------------------------

def client_retire(*, client: Client, user=None, actor: Actor | None = None, reason: str = "") -> Client:
    """Retire the client (and its live descendants); the IdP deletes it via the outbox."""
    with transaction.atomic():
        _require_manage(user, _lock(client))
        return client_transition(client=client, target=ClientState.RETIRED, actor=_actor(user, actor),
                                 reason=reason, action="client.retire")


def client_suspend(*, client: Client, user=None, actor: Actor | None = None, reason: str = "") -> Client:
    """Suspend an active client; the IdP disables it via the outbox."""
    with transaction.atomic():
        _require_manage(user, _lock(client))
        return client_transition(client=client, target=ClientState.SUSPENDED, actor=_actor(user, actor),
                                 reason=reason, action="client.suspend")


@transaction.atomic
def client_resume(*, client: Client, user=None, actor: Actor | None = None, reason: str = "",
                  now: dt.datetime | None = None) -> Client:
    """Resume a suspended client; the IdP re-enables it (outbox UPDATE pushes the live state)."""
    locked = _lock(client)
    _require_manage(user, locked)
    now = now or timezone.now()
    check_transition(locked.state, ClientState.ACTIVE, locked)
    if locked.expires_at is not None and locked.expires_at <= now:
        raise LifecycleError("the client is past its expiry; it cannot be resumed")
    if locked.orphaned_at is not None:
        raise LifecycleError("the client is orphaned: transfer or take it over before resuming it")
    result = client_transition(client=locked, target=ClientState.ACTIVE, actor=_actor(user, actor),
                               reason=reason, action="client.resume")
    outbox_enqueue(client=result, operation=OutboxOperation.UPDATE)
    _sync_instance(client, result)
    return result


# --- rotate key -----------------------------------------------------------------------------------

def validate_public_jwks(jwks: Any) -> dict:
    """Parse and check a JWKS: well formed, importable by joserfc, public keys only. Returns the JWKS."""
    import json

    from joserfc.jwk import KeySet

    if isinstance(jwks, str | bytes):
        try:
            jwks = json.loads(jwks)
        except ValueError as exc:
            raise LifecycleError(f"the JWKS is not valid JSON: {exc}") from exc
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise LifecycleError('the JWKS must be a JSON object with a non-empty "keys" list')
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            raise LifecycleError(f"key {i} is not a JSON object")
        private = sorted(PRIVATE_JWK_MEMBERS & set(key))
        if private:
            raise LifecycleError(
                f"key {i} contains private or secret members ({', '.join(private)}): upload public keys only"
            )
    try:
        keyset = KeySet.import_key_set(jwks)
    except Exception as exc:  # joserfc raises several error types for malformed keys
        raise LifecycleError(f"the JWKS could not be read: {exc}") from exc
    if any(key.is_private for key in keyset.keys):
        raise LifecycleError("the JWKS contains a private key: upload public keys only")
    return {"keys": [dict(key) for key in jwks["keys"]]}


def _thumbprints(jwks: dict | None) -> list[str]:
    if not jwks:
        return []
    from joserfc.jwk import KeySet

    try:
        return [key.thumbprint() for key in KeySet.import_key_set(jwks).keys]
    except Exception:
        return []


@transaction.atomic
def client_rotate_key(*, client: Client, jwks: Any, user=None, actor: Actor | None = None,
                      reason: str = "") -> Client:
    """Replace the client's public JWKS and push it to the IdP (outbox UPDATE)."""
    locked = _lock(client)
    _require_manage(user, locked)
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"a {locked.state} client has no key to rotate")
    new_jwks = validate_public_jwks(jwks)
    before = {"keys": _thumbprints(locked.jwks), "jwks_uri": locked.jwks_uri}
    locked.jwks = new_jwks
    locked.jwks_uri = ""  # an uploaded JWKS replaces a JWKS URI (RFC 7591 §2: one or the other)
    if locked.auth_method == "client_secret_basic":
        locked.auth_method = "private_key_jwt"
    locked.save(update_fields=["jwks", "jwks_uri", "auth_method"])
    audit_record(
        actor=_actor(user, actor), action="client.rotate_key", object_type="client",
        object_id=locked.registration_id, before=before, after={"keys": _thumbprints(new_jwks)},
        reason=reason, policy_version=locked.policy_version,
    )
    outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
    _sync_instance(client, locked)
    return locked


# --- transfer -----------------------------------------------------------------------------------

def _owner_quota_hold(user) -> None:
    """A live client moving to ``user`` counts against their quota: lock them and check (inventory.quotas).
    Raises OwnerQuotaExceeded (a LifecycleError), rolling the transfer back; the offer stays pending."""
    from inventory.quotas import owner_quota_hold  # quotas imports this module

    owner_quota_hold(owner_id=user.pk, subject="you")


@transaction.atomic
def client_transfer_offer(*, client: Client, to_user, user=None, actor: Actor | None = None,
                          reason: str = "") -> TransferOffer:
    """Offer the client to another active person; nothing moves until they accept."""
    locked = _lock(client)
    _require_manage(user, locked)
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"a {locked.state} client cannot be transferred")
    if to_user is None or not to_user.is_active:
        raise LifecycleError("ownership can only be offered to an active person")
    if getattr(to_user, "is_service_account", False):
        raise LifecycleError("a service account cannot own clients")
    if to_user.pk == locked.owner_id:
        raise LifecycleError("that person already owns this client")
    pending = TransferOffer.objects.filter(client=locked, state=TransferState.PENDING)
    already = LifecycleError("this client already has a pending transfer offer")
    if pending.exists():
        raise already
    try:  # the partial unique index transfer_one_pending decides; the client's row lock makes a clash rare
        with transaction.atomic():
            offer = TransferOffer.objects.create(
                client=locked, from_user_id=locked.owner_id, to_user=to_user, offered_by=user, reason=reason
            )
    except IntegrityError as exc:
        if pending.exists():
            raise already from exc
        raise
    audit_record(
        actor=_actor(user, actor), action="client.transfer_offer", object_type="client",
        object_id=locked.registration_id, before={"owner": locked.owner_id},
        after={"offered_to": to_user.pk, "offer": offer.pk}, reason=reason, policy_version=locked.policy_version,
    )
    return offer


def _lock_pending_offer(offer: TransferOffer) -> TransferOffer:
    locked = TransferOffer.objects.select_for_update().get(pk=offer.pk)
    if locked.state != TransferState.PENDING:
        raise LifecycleError(f"this offer is already {locked.state}")
    return locked


@transaction.atomic
def client_transfer_accept(*, offer: TransferOffer, user, reason: str = "") -> Client:
    """The person the client was offered to accepts: ownership moves to them (and any orphan flag clears)."""
    locked_offer = _lock_pending_offer(offer)
    if user.pk != locked_offer.to_user_id:
        raise PermissionRefused("only the person the client was offered to can accept it")
    if not user.is_active:
        raise LifecycleError("an inactive person cannot take ownership")
    client = _lock(locked_offer.client)
    if client.state not in LIVE_STATES:
        raise LifecycleError(f"the client is {client.state}; it can no longer be transferred")
    if client.owner_id != user.pk:
        _owner_quota_hold(user)
    now = timezone.now()
    before = client_snapshot(client) | {"orphaned_at": client.orphaned_at}
    client.owner = user
    client.orphaned_at = None
    client.save(update_fields=["owner", "orphaned_at"])
    locked_offer.state, locked_offer.decided_at = TransferState.ACCEPTED, now
    locked_offer.save(update_fields=["state", "decided_at"])
    audit_record(
        actor=Actor.user(user), action="client.transfer_accept", object_type="client",
        object_id=client.registration_id, before=before, after=client_snapshot(client) | {"offer": offer.pk},
        reason=reason, policy_version=client.policy_version,
    )
    offer.__dict__.update(state=locked_offer.state, decided_at=now)
    return client


@transaction.atomic
def client_transfer_decline(*, offer: TransferOffer, user, reason: str = "") -> TransferOffer:
    """The recipient declines, or the offering owner (or an admin) withdraws the offer."""
    locked_offer = _lock_pending_offer(offer)
    if user.pk == locked_offer.to_user_id:
        state = TransferState.DECLINED
    elif roles.can_manage_client(user, locked_offer.client):
        state = TransferState.CANCELLED
    else:
        raise PermissionRefused("only the recipient or the owner can close this offer")
    locked_offer.state, locked_offer.decided_at = state, timezone.now()
    locked_offer.save(update_fields=["state", "decided_at"])
    audit_record(
        actor=Actor.user(user), action=f"client.transfer_{'decline' if state == TransferState.DECLINED else 'cancel'}",
        object_type="client", object_id=locked_offer.client.registration_id,
        after={"offer": offer.pk, "offered_to": locked_offer.to_user_id}, reason=reason,
    )
    offer.__dict__.update(state=locked_offer.state, decided_at=locked_offer.decided_at)
    return locked_offer


@transaction.atomic
def client_take_over(*, client: Client, user, reason: str = "") -> Client:
    """An orphaned client's team member, team manager, former owner's manager or an admin takes it over."""
    locked = _lock(client)
    if locked.orphaned_at is None:
        raise LifecycleError("only an orphaned client can be taken over; ask the owner for a transfer")
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"the client is {locked.state}")
    if not user.is_active or not roles.can_take_over_client(user, locked):
        raise PermissionRefused("only the team, its manager, the former owner's manager or an admin can take over")
    if locked.owner_id != user.pk:
        _owner_quota_hold(user)
    before = client_snapshot(locked) | {"orphaned_at": locked.orphaned_at}
    locked.owner, locked.orphaned_at = user, None
    locked.save(update_fields=["owner", "orphaned_at"])
    TransferOffer.objects.filter(client=locked, state=TransferState.PENDING).update(
        state=TransferState.CANCELLED, decided_at=timezone.now()
    )
    audit_record(
        actor=Actor.user(user), action="client.take_over", object_type="client", object_id=locked.registration_id,
        before=before, after=client_snapshot(locked), reason=reason, policy_version=locked.policy_version,
    )
    _sync_instance(client, locked)
    return locked


# --- flags set by the sweeps --------------------------------------------------------------------

@transaction.atomic
def client_mark_orphaned(*, client: Client, actor: Actor, reason: str = "", now: dt.datetime | None = None) -> bool:
    """Flag a live client whose owner left. Conditional update: False when it was already flagged."""
    now = now or timezone.now()
    done = Client.objects.filter(pk=client.pk, orphaned_at__isnull=True, state__in=LIVE_STATES).update(
        orphaned_at=now
    )
    if done:
        audit_record(actor=actor, action="client.orphaned", object_type="client", object_id=client.registration_id,
                     before={"owner": client.owner_id}, after={"orphaned_at": now}, reason=reason)
        client.orphaned_at = now
    return bool(done)


@transaction.atomic
def client_flag_stale(*, client: Client, actor: Actor, reason: str = "", now: dt.datetime | None = None) -> bool:
    """Flag an active client that has not been used for a while. False when it was already flagged."""
    now = now or timezone.now()
    done = Client.objects.filter(pk=client.pk, stale_at__isnull=True, state=ClientState.ACTIVE).update(stale_at=now)
    if done:
        audit_record(actor=actor, action="client.stale", object_type="client", object_id=client.registration_id,
                     before={"last_used_at": client.last_used_at}, after={"stale_at": now}, reason=reason)
        client.stale_at = now
    return bool(done)


def client_record_idp_disabled(client_id: int, at: dt.datetime) -> None:
    """Called by outbox delivery when the IdP confirms a disable/delete: record the expiry overshoot.

    Overshoot = IdP confirmation time − ``expires_at``, only for clients that ended by expiring, and
    only the first confirmation counts (a conditional update, so re-deliveries are harmless).
    """
    Client.objects.filter(pk=client_id, idp_disabled_at__isnull=True).update(idp_disabled_at=at)
    client = Client.objects.filter(pk=client_id, state=ClientState.EXPIRED, expiry_overshoot_seconds__isnull=True,
                                   expires_at__isnull=False).only("expires_at").first()
    if client is not None:
        overshoot = max(0.0, (at - client.expires_at).total_seconds())
        Client.objects.filter(pk=client_id, expiry_overshoot_seconds__isnull=True).update(
            expiry_overshoot_seconds=overshoot
        )


# --- set-based variants for sweeps and break glass ----------------------------------------------

@dataclass
class BulkResult:
    transitioned: list[int] = field(default_factory=list)
    cascaded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.transitioned)


def clients_transition_many(
    *,
    clients: list[Client],
    target: str,
    actor: Actor,
    reason: str = "",
    action: str | None = None,
    now: dt.datetime | None = None,
    push_to_idp: bool = True,
    cascade: bool = True,
    nudge: bool = True,
) -> BulkResult:
    """Transition many clients the caller has ALREADY LOCKED, in the caller's transaction.

    Same rules and effects as :func:`client_transition`, set-based: one UPDATE, one audit event per
    client (one chained bulk insert), one outbox row per client (one bulk insert). Illegal moves are
    skipped, not raised, because a sweep's filter and the lock decide the set. Live descendants are
    locked with SKIP LOCKED and ended the same way; any a concurrent transaction holds are caught by
    the expiry sweep's lineage pass on its next run (see ``inventory.sweeps``).
    """
    if not transaction.get_connection().in_atomic_block:
        raise LifecycleError("clients_transition_many must run inside the transaction that locked the rows")
    now = now or timezone.now()
    result = BulkResult()
    legal = []
    for client in clients:
        if target in CLIENT_TRANSITIONS.get(client.state, frozenset()):
            legal.append(client)
        else:
            result.skipped.append(client.pk)
    if not legal:
        return result
    ids = [c.pk for c in legal]
    updates: dict[str, Any] = {"state": target, "state_changed_at": now}
    if target in ENDED_STATES:
        updates["ended_at"] = Coalesce(F("ended_at"), now)
    if target == ClientState.ACTIVE:
        updates["activated_at"] = Coalesce(F("activated_at"), now)
    Client.objects.filter(pk__in=ids).update(**updates)
    events = []
    for client in legal:
        before = client_snapshot(client)
        client.state, client.state_changed_at = target, now
        if target in ENDED_STATES and client.ended_at is None:
            client.ended_at = now
        events.append({
            "actor": actor, "action": action or f"client.{target}", "object_type": "client",
            "object_id": client.registration_id, "before": before, "after": client_snapshot(client),
            "reason": reason, "policy_version": client.policy_version,
        })
    audit_record_many(events)
    operation = _IDP_OPERATION_ON_ENTER.get(target)
    if push_to_idp and operation:
        outbox_insert_many([(c.pk, c.idp_id) for c in legal], operation=operation, now=now)
        if nudge:
            transaction.on_commit(_nudge_requeue)
    result.transitioned = ids
    if cascade and target in (ClientState.RETIRED, ClientState.REVOKED, ClientState.EXPIRED):
        descendant_target = ClientState.RETIRED if target == ClientState.EXPIRED else target
        children = list(
            Client.objects.filter(parent_id__in=ids, state__in=LIVE_STATES)
            .exclude(pk__in=ids).select_for_update(skip_locked=True).order_by("pk")
        )
        if children:
            sub = clients_transition_many(
                clients=children, target=descendant_target, actor=actor, reason=reason or f"parent {target}",
                action=f"client.{descendant_target}.cascade", now=now, push_to_idp=push_to_idp, nudge=False,
            )
            result.cascaded = sub.transitioned + sub.cascaded
    return result


# Columns a set-based transition reads: sweeps load only these (no decrypting ``idp_state`` per row).
TRANSITION_FIELDS = ("id", "registration_id", "state", "owner", "idp", "scopes", "expires_at", "risk_tier",
                     "policy_version", "ended_at", "activated_at", "last_used_at", "orphaned_at", "stale_at")


def outbox_insert_many(rows: list[tuple[int, int]], *, operation: str, now: dt.datetime) -> None:
    """One pending outbox row per (client id, idp id), in the caller's transaction.

    On PostgreSQL this is a COPY: for sweeps of 100k clients it is several times faster than an
    INSERT whose parameters psycopg quotes client-side. Elsewhere (SQLite demo) a bulk_create.
    """
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        OutboxEntry.objects.bulk_create(
            [OutboxEntry(client_id=c, idp_id=i, operation=operation, next_attempt_at=now) for c, i in rows],
            batch_size=1000,
        )
        return
    # Every concrete column, so fields added later (with Python-side defaults) are filled too.
    fields = [f for f in OutboxEntry._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    template = {
        f.attname: now if getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False) else f.get_default()
        for f in fields
    }
    template |= {"operation": operation, "next_attempt_at": now}
    with connection.cursor() as cursor, cursor.cursor.copy(
        f"COPY {OutboxEntry._meta.db_table} ({columns}) FROM STDIN"
    ) as copy:
        for client_id, idp_id in rows:
            row = template | {"client_id": client_id, "idp_id": idp_id}
            copy.write_row(tuple(row[f.attname] for f in fields))


def _nudge_requeue() -> None:
    """One nudge per batch (not per client): the periodic requeue finds every due outbox row anyway."""
    try:
        from portal.celery import app

        app.send_task("inventory.tasks.requeue_outbox")
    except Exception:  # broker down: beat's requeue_outbox picks the rows up
        logger.warning("event=outbox_requeue_nudge_failed")


def live_lineage_ids(root_ids: list[int]) -> list[int]:
    """Ids of the given clients and all their descendants (live or not), level by level."""
    seen: list[int] = list(root_ids)
    frontier = list(root_ids)
    while frontier:
        frontier = list(Client.objects.filter(parent_id__in=frontier).exclude(pk__in=seen).values_list("pk", flat=True))
        seen.extend(frontier)
    return seen


__all__ = [
    "BulkResult", "IllegalTransition", "LifecycleError", "PermissionRefused", "RenewalOutcome",
    "client_apply_renewal", "client_flag_stale", "client_mark_orphaned", "client_record_idp_disabled", "client_renew", "client_resume",
    "client_retire", "client_rotate_key", "client_snapshot", "client_suspend", "client_take_over",
    "client_transfer_accept", "client_transfer_decline", "client_transfer_offer", "client_transition",
    "clients_transition_many", "live_lineage_ids", "renewal_needs_review", "tier_ttl_ceiling",
    "validate_public_jwks",
]
