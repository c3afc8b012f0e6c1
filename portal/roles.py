"""Roles and every permission check, in one place.

Roles are Django groups. Superusers count as admins. The rules:

* approver — clears the review queue (never their own requests; enforced in approvals.services);
* owner    — sponsors clients: mints tokens, renews/retires/transfers their own clients;
* security — CISO/auditor: reads everything, changes nothing except containment (break-glass suspend/retire,
  holds on clients and lifting them, spawn rights);
* admin    — configures policy, scopes, IdP connections; sees everything.

Approvers, security, admins, staff and superusers are *privileged* (:func:`is_privileged`): the company
directory (SCIM) may not change or deactivate them, and nothing it does can grant a role.

Views use :class:`RoleRequiredMixin` / :func:`role_required`, the API uses :class:`HasRole`; both call
:func:`has_role`, so a rule changes in exactly one place. Checks that read a client (may this person manage,
view or take over *this* client) are inventory's: ``inventory.permissions``. Nothing here knows an app's models.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import wraps

from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission


class Role(StrEnum):
    APPROVER = "approver"
    OWNER = "owner"
    SECURITY = "security"
    ADMIN = "admin"


ALL_ROLES = tuple(Role)
#: Roles that make an account privileged: it decides, investigates or configures. Owners are ordinary people.
PRIVILEGED_ROLES = (Role.APPROVER, Role.SECURITY, Role.ADMIN)


def roles_of(user) -> frozenset[str]:
    """The user's roles, cached on the user object for the request."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_registrar_roles", None)
    if cached is None:
        names = {g.name for g in user.groups.all()} & {r.value for r in Role}
        if user.is_superuser:
            names.add(Role.ADMIN.value)
        cached = frozenset(names)
        user._registrar_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(roles_of(user) & set(roles))


def is_privileged(user) -> bool:
    """Staff, superusers, approvers, security and admins, whether or not the account is active today.

    Unlike :func:`roles_of` this ignores ``is_active``: a deactivated admin is still an admin to whoever
    could switch them back on. Read from the database, not the per-request cache.
    """
    if user is None or user.pk is None:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name__in=[r.value for r in PRIVILEGED_ROLES]).exists()


def privileged_users():
    """Every privileged account (see :func:`is_privileged`), as a queryset."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    return (
        get_user_model()
        .objects.filter(
            Q(is_staff=True) | Q(is_superuser=True) | Q(groups__name__in=[r.value for r in PRIVILEGED_ROLES])
        )
        .distinct()
    )


# --- named capabilities (what views and services ask) ------------------------------------------


def can_approve(user) -> bool:
    return has_role(user, Role.APPROVER) and not getattr(user, "is_service_account", False)


def can_preregister(user, owner) -> bool:
    """Submit a client by hand (pre-registration, docs/cimd.md): an owner for themselves, an admin for any
    owner. Never a service account: a person answers for what they submit."""
    if user is None or getattr(user, "is_service_account", False):
        return False
    if owner is not None and owner.pk != user.pk:
        return has_role(user, Role.ADMIN)
    return has_role(user, Role.OWNER, Role.ADMIN)


def can_adopt(user) -> bool:
    """Propose an owner for a shadow client found at the IdP (adoption through pre-registration, docs/cimd.md):
    security or an admin. Never a service account."""
    if user is None or getattr(user, "is_service_account", False):
        return False
    return has_role(user, Role.SECURITY, Role.ADMIN)


def can_see_all_clients(user) -> bool:
    return has_role(user, Role.SECURITY, Role.ADMIN)


def can_see_all_teams(user) -> bool:
    """Every team's dashboard and framework report: security and admins."""
    return has_role(user, Role.SECURITY, Role.ADMIN)


def can_see_team(user, *, member: bool) -> bool:
    """One team's dashboard and framework report: security and admins see every team's; an owner sees the
    teams they belong to or manage (``member``: the caller's app knows its teams, this module does not)."""
    return can_see_all_teams(user) or (member and has_role(user, Role.OWNER))


def can_break_glass(user) -> bool:
    return has_role(user, Role.ADMIN, Role.SECURITY)


def can_hold_clients(user) -> bool:
    """Place a hold on a client, lift one, revoke or restore a spawn right. An owner never may: a hold is
    exactly what its owner cannot undo."""
    return has_role(user, Role.ADMIN, Role.SECURITY) and not getattr(user, "is_service_account", False)


# --- adapters for views and the API ----------------------------------------------------------


class RoleRequiredMixin(AccessMixin):
    """Class-based view mixin: anonymous → login, signed in without the role → 403."""

    required_roles: Iterable[str] = ()

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if self.required_roles and not has_role(request.user, *self.required_roles):
            raise PermissionDenied("Your role does not allow this page.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]  # the view's, after the mixin


def role_required(*roles: str):
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            from django.contrib.auth.views import redirect_to_login

            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if roles and not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not allow this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class HasRole(BasePermission):
    """DRF permission: ``permission_classes = [HasRole.of("security", "admin")]``.

    Security is read-only everywhere in the API: unsafe methods need a role other than security.
    """

    roles: tuple[str, ...] = ()
    write_roles: tuple[str, ...] | None = None

    @classmethod
    def of(cls, *roles: str, write: Iterable[str] | None = None):
        return type("HasRole_" + "_".join(roles), (cls,), {"roles": roles, "write_roles": tuple(write or ())})

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return has_role(user, *self.roles)
        write_roles = self.write_roles if self.write_roles else tuple(r for r in self.roles if r != Role.SECURITY)
        return has_role(user, *write_roles)
