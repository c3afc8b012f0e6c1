"""Who may act on one client: the client-level permission checks, in one place.

The role checks that need no client (approver, security, admin) are the kernel's (``portal.roles``); the
checks below read a client, its team and its owner's manager, which are inventory's models, so they live
here. Services (``inventory.lifecycle``) and views both call these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.roles import Role, can_see_all_clients, has_role

if TYPE_CHECKING:  # pragma: no cover
    from inventory.models import Client


def can_manage_client(user, client: Client) -> bool:
    """Owner actions (renew, retire, rotate, transfer, suspend) on one client."""
    if has_role(user, Role.ADMIN):
        return True
    return client.owner_id is not None and client.owner_id == user.pk


def can_take_over_client(user, client: Client) -> bool:
    """Take over an orphaned client: its team's members and manager, the former owner's manager, admins,
    and the owner themselves once reactivated (a returning person reclaims their clients)."""
    if has_role(user, Role.ADMIN) or (client.owner_id is not None and client.owner_id == user.pk):
        return True
    team = client.team
    if team is not None and (team.manager_id == user.pk or team.members.filter(pk=user.pk).exists()):
        return True
    former = client.owner
    return former is not None and former.manager_id is not None and former.manager_id == user.pk


def can_view_client(user, client: Client) -> bool:
    return can_see_all_clients(user) or client.owner_id == user.pk or has_role(user, Role.APPROVER)


__all__ = ["can_manage_client", "can_take_over_client", "can_view_client"]
