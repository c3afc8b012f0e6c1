"""Containment on one client: holds (place, lift) and the right to spawn children (revoke, restore).

A *hold* is a suspension by security or an admin. While a client is held, nothing makes it active —
not its owner's resume, not an admin's resume, not any sweep or sync: :func:`inventory.lifecycle.client_transition`
refuses, and the database constraint ``client_held_not_active`` backs it up. Holds come from break glass
(``inventory.breakglass``), from an admin suspending someone else's client (``client_suspend``) and from
:func:`client_hold_place`; a held client's live descendants are held too (kind ``containment``, same ``hold_ref``).

Only :func:`client_hold_lift` removes a hold: security or an admin, with a reason. It lifts the hold on the
client and on its descendants held by the same decision, and resumes those the hold had suspended (a client
its owner had suspended before stays suspended; one past its expiry or orphaned stays suspended too).

The spawn right: a client's registration access token may spawn children (RFC 7591 with a parent's token)
until containment revokes that right (break glass on a lineage, or :func:`client_spawn_revoke`); intake then
refuses spawns with a clear message. Restoring it is :func:`client_spawn_restore`.

Every change here is one transaction with its audit events, and permissions come from ``portal.roles``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Field
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, HoldKind, OutboxOperation
from inventory.lifecycle import (
    HOLD_FIELDS,
    Hold,
    LifecycleError,
    PermissionRefused,
    client_snapshot,
    client_transition,
    hold_in_place,
    live_lineage_ids,
    suspend_descendants,
    suspended_ancestor,
)
from inventory.models import Client
from inventory.outbox import outbox_enqueue
from portal import roles
from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)


def _require_containment_role(user) -> None:
    if user is None or not roles.can_hold_clients(user):
        raise PermissionRefused("only security or an admin can place or lift holds and change spawn rights")


def _required_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise LifecycleError("say why: a reason is required")
    return reason[:2000]


def suspended_by_hold(client: Client) -> bool:
    """True when the hold itself suspended the client (state change and hold share one timestamp, written
    together), False when its owner had suspended it before the hold came."""
    return (
        client.state == ClientState.SUSPENDED
        and client.hold_at is not None
        and client.state_changed_at == client.hold_at
    )


@transaction.atomic
def client_hold_place(*, client: Client, user, reason: str) -> Client:
    """Security or an admin holds a live client: suspended (if it is not yet) and only they can lift it.
    Its live descendants are suspended and held as well."""
    _require_containment_role(user)
    reason = _required_reason(reason)
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if locked.hold_kind:
        raise LifecycleError(f"client {locked.registration_id} is already held")
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"a {locked.state} client cannot be held")
    hold = Hold(kind=HoldKind.SECURITY, by_id=user.pk, reason=reason)
    actor = Actor.user(user)
    if locked.state == ClientState.SUSPENDED:
        hold_in_place(locked, hold=hold, actor=actor, reason="held by security", action="client.hold")
        suspend_descendants(locked, actor=actor, push_to_idp=True, hold=hold.for_descendants(locked))
    else:
        client_transition(
            client=locked, target=ClientState.SUSPENDED, actor=actor, reason=reason, action="client.hold", hold=hold
        )
    log_event(logger, "client_hold", client=locked.registration_id, ref=hold.ref)
    locked.refresh_from_db()
    return locked


@dataclass
class HoldLift:
    """What :func:`client_hold_lift` did: the clients whose hold it lifted, and which of them it resumed."""

    lifted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    still_suspended: dict[str, str] = field(default_factory=dict)  # registration id -> why


@transaction.atomic
def client_hold_lift(*, client: Client, user, reason: str, now: dt.datetime | None = None) -> HoldLift:
    """Security or an admin lifts a hold, with a reason: on the client and on its descendants held by the same
    decision. Clients the hold suspended are resumed (outbox UPDATE re-enables them); one its owner had
    suspended before, or past its expiry, or orphaned, stays suspended — now its owner's to resume or renew."""
    _require_containment_role(user)
    reason = _required_reason(reason)
    now = now or timezone.now()
    root = Client.objects.select_for_update().get(pk=client.pk)
    if not root.hold_kind:
        raise LifecycleError(f"client {root.registration_id} is not held")
    held_ancestor = _held_ancestor(root)
    if held_ancestor is not None:
        raise LifecycleError(f"its ancestor {held_ancestor.registration_id} is held too; lift that hold first")
    subtree = live_lineage_ids([root.pk])
    held = list(
        Client.objects.select_for_update()
        .filter(pk__in=subtree, hold_ref=root.hold_ref)
        .exclude(hold_kind="")
        .order_by("depth", "pk")
    )
    held = [root] + [c for c in held if c.pk != root.pk and c.state in LIVE_STATES]
    actor = Actor.user(user)
    outcome = HoldLift()
    for locked in held:
        before = client_snapshot(locked) | {"hold_reason": locked.hold_reason, "hold_at": locked.hold_at}
        resume = suspended_by_hold(locked)
        for name in HOLD_FIELDS:
            model_field = Client._meta.get_field(name)
            assert isinstance(model_field, Field)  # HOLD_FIELDS are columns
            setattr(locked, name, model_field.get_default())
        locked.save(update_fields=list(HOLD_FIELDS))
        audit_record(
            actor=actor,
            action="client.hold_lift",
            object_type="client",
            object_id=locked.registration_id,
            before=before,
            after=client_snapshot(locked),
            reason=reason,
            policy_version=locked.policy_version,
        )
        outcome.lifted.append(locked.registration_id)
        why_not = _why_not_resumable(locked, now) if resume else "its owner had suspended it before the hold"
        if locked.state != ClientState.SUSPENDED:
            continue
        if why_not:
            outcome.still_suspended[locked.registration_id] = why_not
            continue
        client_transition(
            client=locked,
            target=ClientState.ACTIVE,
            actor=actor,
            reason=reason,
            action="client.resume.hold_lifted",
            cascade=False,
        )
        outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
        outcome.resumed.append(locked.registration_id)
    log_event(
        logger,
        "client_hold_lift",
        client=root.registration_id,
        lifted=len(outcome.lifted),
        resumed=len(outcome.resumed),
    )
    client.refresh_from_db()
    return outcome


def _held_ancestor(client: Client) -> Client | None:
    """The nearest live ancestor under a hold: a client is not let out while its ancestor stays contained."""
    ancestor_id = client.parent_id
    while ancestor_id is not None:
        ancestor = Client.objects.only("registration_id", "state", "hold_kind", "parent_id").get(pk=ancestor_id)
        if ancestor.hold_kind and ancestor.state in LIVE_STATES:
            return ancestor
        ancestor_id = ancestor.parent_id
    return None


def _why_not_resumable(client: Client, now: dt.datetime) -> str:
    if client.expires_at is not None and client.expires_at <= now:
        return "past its expiry"
    if client.orphaned_at is not None:
        return "orphaned: transfer or take it over first"
    paused = suspended_ancestor(client)
    if paused is not None:
        return f"its ancestor {paused.registration_id} is suspended"
    return ""


def client_spawn_revoke(*, client: Client, actor: Actor, reason: str, now: dt.datetime | None = None) -> bool:
    """Take away the client's right to spawn children (conditional: False when it was already revoked).
    Runs in the caller's transaction (break glass) or its own."""
    reason = _required_reason(reason)
    now = now or timezone.now()
    with transaction.atomic():
        done = Client.objects.filter(pk=client.pk, spawn_revoked_at__isnull=True).update(
            spawn_revoked_at=now, spawn_revoked_reason=reason
        )
        if done:
            audit_record(
                actor=actor,
                action="client.spawn_revoke",
                object_type="client",
                object_id=client.registration_id,
                before={"can_spawn": True},
                after={"can_spawn": False, "children_spawned": client.children_spawned},
                reason=reason,
                policy_version=client.policy_version,
            )
            client.spawn_revoked_at, client.spawn_revoked_reason = now, reason
    return bool(done)


def client_spawn_revoke_by(*, client: Client, user, reason: str) -> bool:
    """Security or an admin revokes one client's spawn right (explain page)."""
    _require_containment_role(user)
    return client_spawn_revoke(client=client, actor=Actor.user(user), reason=reason)


@transaction.atomic
def client_spawn_restore(*, client: Client, user, reason: str) -> Client:
    """Security or an admin gives a client its spawn right back, with a reason."""
    _require_containment_role(user)
    reason = _required_reason(reason)
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if locked.spawn_revoked_at is None:
        raise LifecycleError(f"client {locked.registration_id} may already spawn children")
    before = {"can_spawn": False, "revoked_at": locked.spawn_revoked_at, "revoked_because": locked.spawn_revoked_reason}
    locked.spawn_revoked_at, locked.spawn_revoked_reason = None, ""
    locked.save(update_fields=["spawn_revoked_at", "spawn_revoked_reason"])
    audit_record(
        actor=Actor.user(user),
        action="client.spawn_restore",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after={"can_spawn": True},
        reason=reason,
        policy_version=locked.policy_version,
    )
    client.spawn_revoked_at, client.spawn_revoked_reason = None, ""
    return locked


__all__ = [
    "HoldLift",
    "client_hold_lift",
    "client_hold_place",
    "client_spawn_restore",
    "client_spawn_revoke",
    "client_spawn_revoke_by",
    "suspended_by_hold",
]
