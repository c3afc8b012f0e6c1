"""Client lifecycle: the only code that changes ``Client.state``.

Each transition locks the client row, checks the transition map in ``inventory.choices``, writes
one audit event and, where the IdP must follow, an outbox entry — all in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.choices import CLIENT_TRANSITIONS, ENDED_STATES, LIVE_STATES, ClientState, OutboxOperation
from inventory.models import Client
from inventory.outbox import outbox_enqueue
from portal.audit import Actor, audit_record


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
