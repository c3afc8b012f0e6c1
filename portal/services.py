"""Writes on the shared kernel's own models (people are written by ``inventory.directory`` / ``leavers``)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from portal.audit import Actor, audit_record
from portal.models import ApiToken


class ApiTokenError(Exception):
    """A refused API token change; nothing was written."""


@transaction.atomic
def api_token_revoke(*, actor: Actor, token: ApiToken, reason: str = "") -> ApiToken:
    """Revoke a management-API token for good (revocation is one-way: a new token is minted instead)."""
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is not None:
        raise ApiTokenError(f"API token {locked.prefix}… is already revoked")
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        action="api_token.revoke",
        object_type="api_token",
        object_id=locked.pk,
        before={"revoked_at": None},
        after={"revoked_at": locked.revoked_at},
        reason=reason,
    )
    return locked


#: How events about people are recorded, by Django admin (``RegistrarUserAdmin``) and by :func:`roles_set` alike.
USER_AUDIT_EXCLUDE = ("last_login",)
USER_AUDIT_SECRET_FIELDS = ("password",)


def roles_set(*, actor: Actor, user, roles: list[str], reason: str = ""):
    """Give ``user`` exactly ``roles`` (Registrar's role groups; other groups are kept), as editing the person's
    groups in Django admin does: the user's ``full_clean``, one transaction, one ``user.admin_change`` event
    with the groups before and after. Unknown roles, or taking the admin role from the last active admin, raise
    ``ValueError``; nothing changes."""
    from django.contrib.auth.models import Group

    from portal.auditedadmin import save_audited
    from portal.roles import Role

    role_names = {r.value for r in Role}
    unknown = sorted(set(roles) - role_names)
    if unknown:
        raise ValueError(f"Unknown role(s): {', '.join(unknown)}")
    if Role.ADMIN.value not in roles and not user.is_superuser and user.groups.filter(name=Role.ADMIN.value).exists():
        from django.contrib.auth import get_user_model
        from django.db.models import Q

        others = (
            get_user_model()
            .objects.filter(is_active=True)
            .filter(Q(is_superuser=True) | Q(groups__name=Role.ADMIN.value))
            .exclude(pk=user.pk)
        )
        if not others.exists():
            raise ValueError("This is the last active admin: give another person the admin role first")
    kept = list(user.groups.exclude(name__in=role_names))
    wanted = list(Group.objects.filter(name__in=set(roles)))
    if len(wanted) != len(set(roles)):
        raise ValueError("A role's group is missing: run the migrations")
    save_audited(
        user,
        actor=actor,
        object_type="user",
        changes={},
        members={"groups": kept + wanted},
        reason=reason,
        exclude=USER_AUDIT_EXCLUDE,
        secret_fields=USER_AUDIT_SECRET_FIELDS,
    )
    if hasattr(user, "_registrar_roles"):
        del user._registrar_roles  # roles_of's per-request cache
    return user
