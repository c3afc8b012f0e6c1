"""The rules every lifecycle module shares: the transition check, the audit snapshot, the row lock, who acts.

Person-facing services take ``user`` (the person acting; permissions are checked through
``inventory.permissions``) or an ``actor`` for system callers (sweeps, SCIM, break glass): :func:`acting`
turns either into the audit actor.

Services return what they changed (the locked, updated row, or an outcome naming it); the instance a caller
passed in is left as it was (``client_transition`` is the one exception, see its docstring).
"""

from __future__ import annotations

from typing import Any

from inventory.choices import CLIENT_TRANSITIONS, ENDED_STATES, ClientState, OutboxOperation
from inventory.lifecycle.errors import IllegalTransition, PermissionRefused
from inventory.models import Client
from inventory.permissions import can_manage_client
from portal.audit import Actor

# What the IdP must do when a client enters a state.
IDP_OPERATION_ON_ENTER: dict[str, str] = {
    ClientState.SUSPENDED: OutboxOperation.DISABLE,
    ClientState.EXPIRED: OutboxOperation.DISABLE,
    ClientState.RETIRED: OutboxOperation.DELETE,
    ClientState.REVOKED: OutboxOperation.DELETE,
}


def check_transition(current: str, target: str, client: Client | None = None) -> None:
    if target not in CLIENT_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(client, current, target)


def client_snapshot(client: Client) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "state": client.state,
        "owner": client.owner_id,
        "scopes": list(client.scopes),
        "expires_at": client.expires_at.isoformat() if client.expires_at else None,
        "risk_tier": client.risk_tier,
    }
    if client.hold_kind:  # only when set: most events describe clients nobody holds
        snapshot["hold"] = {"kind": client.hold_kind, "by": client.hold_by_id, "ref": client.hold_ref}
    return snapshot


def apply_state(client: Client, target: str, now) -> list[str]:
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


def acting(user, actor: Actor | None) -> Actor:
    if actor is not None:
        return actor
    if user is None:
        raise ValueError("pass user= (a person) or actor= (a system caller)")
    return Actor.user(user)


def require_manage(user, client: Client) -> None:
    if user is not None and not can_manage_client(user, client):
        raise PermissionRefused(f"you may not manage client {client.registration_id}")


def lock_client(client: Client) -> Client:
    return Client.objects.select_for_update().get(pk=client.pk)
