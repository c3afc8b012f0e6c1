"""Services for what Django admin configures in inventory — the scope catalogue and teams — used by the
/api/v1/scopes/ and /api/v1/teams/ endpoints. Each write validates as the admin form does (``full_clean``),
runs in one transaction and records one ``scope.admin_*`` / ``team.admin_*`` event (the admin's names, its
before/after snapshot: ``portal.auditedadmin.save_audited``). A change that changes nothing records nothing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from inventory.models import ScopeDefinition, Team
from portal.audit import Actor
from portal.auditedadmin import save_audited


def scope_save(scope: ScopeDefinition | None, *, actor: Actor, changes: dict[str, Any]) -> ScopeDefinition:
    """Add a scope to the catalogue (``scope`` None) or change one (``is_active=False`` deactivates it)."""
    return save_audited(scope or ScopeDefinition(), actor=actor, object_type="scope", changes=changes)


def team_save(team: Team | None, *, actor: Actor, changes: dict[str, Any]) -> Team:
    """Create or change a team (name, slug, manager, notification e-mail, live-client limit)."""
    changes = dict(changes)
    members = changes.pop("members", None)
    return save_audited(
        team or Team(),
        actor=actor,
        object_type="team",
        changes=changes,
        members=None if members is None else {"members": list(members)},
    )


def team_members_change(team: Team, *, actor: Actor, add: list | None = None, remove: list | None = None) -> Team:
    """Add and/or remove members (users); one ``team.admin_change`` event with the members before and after."""
    current = set(team.members.values_list("pk", flat=True))
    wanted = (current | {u.pk for u in add or []}) - {u.pk for u in remove or []}
    users = list(get_user_model().objects.filter(pk__in=wanted))
    return save_audited(team, actor=actor, object_type="team", changes={}, members={"members": users})
