"""What approvals shows through the kernel's pages (registered in ``ApprovalsConfig.ready()``).

``portal`` imports no app, so the home page tiles and the navigation badge that count registration requests
are handed to it here: ``portal.home.home_tiles_register`` and ``portal.context_processors.nav_count_register``.
They are on every page an approver opens, so each counts at most ``REGISTRAR_COUNT_THRESHOLD`` + 1 rows
(``portal.paging.bounded``) and shows "10,000+" past it: a queue that deep is read through its filters.
"""

from __future__ import annotations

from approvals.models import RegistrationRequest
from portal.context_processors import nav_count_register
from portal.home import home_tiles_register
from portal.paging import BoundedCount, bounded
from portal.roles import Role


def pending_for_approver(user) -> BoundedCount:
    """Pending requests this approver may still decide (the review queue's badge), up to the threshold."""
    return bounded(RegistrationRequest.objects.awaiting_decision_by(user))


def home_tiles(user, roles: frozenset[str]) -> dict[str, int]:
    tiles: dict[str, int] = {}
    if Role.APPROVER in roles:
        tiles["pending_approvals"] = pending_for_approver(user)
    if Role.OWNER in roles:
        tiles["my_pending_requests"] = bounded(RegistrationRequest.objects.pending().filter(owner=user))
    return tiles


def register() -> None:
    home_tiles_register("approvals", home_tiles)
    nav_count_register("pending_approvals", role=Role.APPROVER, count=pending_for_approver)


__all__ = ["home_tiles", "pending_for_approver", "register"]
