"""Numbers for the home page tiles, per role. Reads only; the apps are reached through the registry."""

from __future__ import annotations

from datetime import timedelta

from django.apps import apps
from django.utils import timezone

from portal.roles import Role, roles_of


def home_summary(user) -> dict[str, int]:
    roles = roles_of(user)
    Client = apps.get_model("inventory", "Client")
    Request = apps.get_model("approvals", "RegistrationRequest")
    now = timezone.now()
    summary: dict[str, int] = {}
    if Role.APPROVER in roles:
        summary["pending_approvals"] = Request.objects.awaiting_decision_by(user).count()
    if Role.OWNER in roles:
        mine = Client.objects.owned_by(user).live()
        summary["my_live_clients"] = mine.count()
        summary["expiring_soon"] = mine.filter(expires_at__lte=now + timedelta(days=7)).count()
        summary["my_pending_requests"] = Request.objects.pending().filter(owner=user).count()
    if roles & {Role.SECURITY, Role.ADMIN}:
        live = Client.objects.live()
        summary["live_clients"] = live.count()
        summary["orphaned"] = live.orphaned().count()
        summary["unmanaged"] = Client.objects.unmanaged().live().count()
        summary["sync_failed"] = live.filter(sync_failed=True).count()
    return summary
