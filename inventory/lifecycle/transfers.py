"""Changes of owner: a transfer offered, accepted or declined, an orphan taken over.

A live client moving to a new owner counts against their live-client quota, checked under their lock
(``inventory.quotas``); a refusal rolls the change back and leaves the offer pending.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory import quotas
from inventory.choices import LIVE_STATES
from inventory.lifecycle.errors import LifecycleError, PermissionRefused
from inventory.lifecycle.state import acting, client_snapshot, lock_client, require_manage
from inventory.models import Client, TransferOffer, TransferState
from inventory.permissions import can_manage_client, can_take_over_client
from portal.audit import Actor, audit_record


def _owner_quota_hold(user) -> None:
    """A live client moving to ``user`` counts against their quota: lock them and check (inventory.quotas).
    Raises OwnerQuotaExceeded (a LifecycleError), rolling the transfer back; the offer stays pending."""
    quotas.owner_quota_hold(owner_id=user.pk, subject="you")


@transaction.atomic
def client_transfer_offer(
    *, client: Client, to_user, user=None, actor: Actor | None = None, reason: str = ""
) -> TransferOffer:
    """Offer the client to another active person; nothing moves until they accept."""
    locked = lock_client(client)
    require_manage(user, locked)
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
        actor=acting(user, actor),
        action="client.transfer_offer",
        object_type="client",
        object_id=locked.registration_id,
        before={"owner": locked.owner_id},
        after={"offered_to": to_user.pk, "offer": offer.pk},
        reason=reason,
        policy_version=locked.policy_version,
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
    client = lock_client(locked_offer.client)
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
        actor=Actor.user(user),
        action="client.transfer_accept",
        object_type="client",
        object_id=client.registration_id,
        before=before,
        after=client_snapshot(client) | {"offer": offer.pk},
        reason=reason,
        policy_version=client.policy_version,
    )
    return client


@transaction.atomic
def client_transfer_decline(*, offer: TransferOffer, user, reason: str = "") -> TransferOffer:
    """The recipient declines, or the offering owner (or an admin) withdraws the offer."""
    locked_offer = _lock_pending_offer(offer)
    if user.pk == locked_offer.to_user_id:
        state = TransferState.DECLINED
    elif can_manage_client(user, locked_offer.client):
        state = TransferState.CANCELLED
    else:
        raise PermissionRefused("only the recipient or the owner can close this offer")
    locked_offer.state, locked_offer.decided_at = state, timezone.now()
    locked_offer.save(update_fields=["state", "decided_at"])
    audit_record(
        actor=Actor.user(user),
        action=f"client.transfer_{'decline' if state == TransferState.DECLINED else 'cancel'}",
        object_type="client",
        object_id=locked_offer.client.registration_id,
        after={"offer": offer.pk, "offered_to": locked_offer.to_user_id},
        reason=reason,
    )
    return locked_offer


@transaction.atomic
def client_take_over(*, client: Client, user, reason: str = "") -> Client:
    """An orphaned client's team member, team manager, former owner's manager or an admin takes it over."""
    locked = lock_client(client)
    if locked.orphaned_at is None:
        raise LifecycleError("only an orphaned client can be taken over; ask the owner for a transfer")
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"the client is {locked.state}")
    if not user.is_active or not can_take_over_client(user, locked):
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
        actor=Actor.user(user),
        action="client.take_over",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked),
        reason=reason,
        policy_version=locked.policy_version,
    )
    return locked
