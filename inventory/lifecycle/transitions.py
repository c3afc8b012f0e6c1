"""One client changes state: the only code that changes ``Client.state`` row by row.

Each transition locks the client row, checks the transition map in ``inventory.choices``, writes one audit
event and, where the IdP must follow, an outbox entry — all in one transaction. Containment cascades:
suspending, retiring, revoking or expiring a client ends or suspends its live descendants in the same
transaction, and a hold reaches them too. The set-based variant for sweeps and break glass is
:mod:`inventory.lifecycle.bulk`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState
from inventory.lifecycle.errors import ClientHeld
from inventory.lifecycle.holds import HOLD_FIELDS, Hold, hold_in_place
from inventory.lifecycle.state import IDP_OPERATION_ON_ENTER, apply_state, check_transition, client_snapshot
from inventory.models import Client
from inventory.outbox import outbox_enqueue
from portal.audit import Actor, audit_record


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
    hold: Hold | None = None,
) -> Client:
    """Move one client to ``target`` (locking it), audit it, queue the IdP change.

    A held client never becomes active here (:class:`ClientHeld`); ``hold`` (with target suspended) places
    one. Retiring, revoking or expiring a parent ends its live descendants in the same transaction;
    suspending it suspends them (and a hold reaches them as containment).

    Returns the locked, updated row. Unlike the other lifecycle services it also copies the changed fields
    onto ``client``: outbox delivery and the intake read the instance they passed in afterwards.
    """
    if hold is not None and target != ClientState.SUSPENDED:
        raise ValueError("a hold comes with a suspension")
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if target == ClientState.ACTIVE and locked.hold_kind:
        raise ClientHeld(locked)
    check_transition(locked.state, target, locked)
    before = client_snapshot(locked)
    now = timezone.now()
    fields = apply_state(locked, target, now)
    if hold is not None:
        for name, value in hold.columns(now).items():
            setattr(locked, name, value)
        fields += list(HOLD_FIELDS)
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
    operation = IDP_OPERATION_ON_ENTER.get(target)
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
    if cascade and target == ClientState.SUSPENDED:
        suspend_descendants(
            locked,
            actor=actor,
            push_to_idp=push_to_idp,
            hold=hold.for_descendants(locked) if hold is not None else None,
        )
    client.__dict__.update(
        {f.attname: getattr(locked, f.attname) for f in Client._meta.concrete_fields if f.name in fields}
    )
    return locked


def _live_children(client: Client) -> Iterable[Client]:
    return Client.objects.filter(parent=client, state__in=LIVE_STATES).order_by("pk")


def suspended_ancestor(client: Client) -> Client | None:
    """The nearest suspended ancestor: a child does not run while its lineage above it is suspended."""
    ancestor_id = client.parent_id
    while ancestor_id is not None:
        ancestor = Client.objects.only("name", "registration_id", "state", "parent_id").get(pk=ancestor_id)
        if ancestor.state == ClientState.SUSPENDED:
            return ancestor
        ancestor_id = ancestor.parent_id
    return None


def suspend_descendants(parent: Client, *, actor: Actor, push_to_idp: bool, hold: Hold | None) -> None:
    """In the caller's transaction: suspend ``parent``'s live descendants. With a hold, already-suspended ones
    are held as well (else their owner could resume them under a held ancestor)."""
    reason = f"parent {parent.registration_id} suspended"
    for child in _live_children(parent):
        if child.state == ClientState.SUSPENDED:
            if hold is not None:
                hold_in_place(child, hold=hold, actor=actor, reason=reason, action="client.hold.cascade")
            suspend_descendants(child, actor=actor, push_to_idp=push_to_idp, hold=hold)
        else:  # active or provisioning: client_transition suspends its own descendants in turn
            client_transition(
                client=child,
                target=ClientState.SUSPENDED,
                actor=actor,
                reason=reason,
                action="client.suspend.cascade",
                push_to_idp=push_to_idp,
                hold=hold,
            )
