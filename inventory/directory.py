"""The company directory's writes (SCIM, ``inventory.scim``): ordinary people only.

The directory may create people, change their directory attributes (:data:`DIRECTORY_ATTRIBUTES`:
user name, directory id, name, e-mail) and switch them off or on (the leaver signal,
:mod:`inventory.leavers`). It never touches a privileged account (:func:`portal.roles.is_privileged`:
staff, superusers, approvers, security, admins — active or not), never lets a new or renamed person take a
privileged account's user name, directory id or e-mail, and cannot set anything else: no role, group,
``is_staff``, ``is_superuser`` or password. A directory that could, or could change an admin's e-mail
(password reset → admin), would be a second, unaudited way into Registrar's highest rights.

Every change is one transaction with one audit event naming the directory as the actor.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from inventory.leavers import ACTIVITY_FIELDS, user_deactivate, user_reactivate
from portal.audit import Actor, audit_record
from portal.roles import is_privileged, privileged_users

#: User fields the directory owns, and nothing else.
DIRECTORY_ATTRIBUTES = ("username", "external_id", "first_name", "last_name", "email")
REFUSED_PRIVILEGED = (
    "SCIM manages ordinary people only; approvers, security, admins, staff and superusers are changed in "
    "Registrar's admin"
)


class DirectoryError(Exception):
    """A refused directory change; nothing was written."""


class PrivilegedAccount(DirectoryError):
    """The target is a privileged account."""


class Collision(DirectoryError):
    """The change would give a person another account's identity."""


class InvalidAttributes(DirectoryError):
    """Attributes outside :data:`DIRECTORY_ATTRIBUTES`, or values the model cannot hold."""


def _snapshot(user) -> dict:
    return {name: getattr(user, name) for name in DIRECTORY_ATTRIBUTES}


def _check_attributes(attributes: dict) -> None:
    unknown = sorted(set(attributes) - set(DIRECTORY_ATTRIBUTES))
    if unknown:
        raise InvalidAttributes(f"the directory cannot set {', '.join(unknown)}")


_IDENTITY = (
    ("username", "userName", "username__iexact"),
    ("external_id", "externalId", "external_id"),
    ("email", "e-mail", "email__iexact"),
)


def _check_no_privileged_collision(attributes: dict, *, exclude_pk: int | None = None) -> None:
    """Refuse a user name, directory id or e-mail that a privileged account already has."""
    for name, label, lookup in _IDENTITY:
        value = attributes.get(name)
        if value and privileged_users().filter(**{lookup: value}).exclude(pk=exclude_pk).exists():
            raise Collision(f"{label} {value!r} belongs to a privileged account; {REFUSED_PRIVILEGED}")


def _save(user, *, update_fields: list[str] | None = None) -> None:
    try:
        with transaction.atomic():
            user.save(update_fields=update_fields)
    except IntegrityError:
        raise Collision("userName or externalId already exists")


def _set_active(user, active: bool | None, *, actor: Actor) -> None:
    """Switch ``user`` off or on as the directory says; ``user`` is reloaded if that changed it."""
    if active is False:
        changed = user_deactivate(user=user, actor=actor, source="scim", reason="directory: active=false")
    elif active is True:
        changed = user_reactivate(user=user, actor=actor, source="scim", reason="directory: active=true")
    else:
        changed = False
    if changed:
        user.refresh_from_db(fields=ACTIVITY_FIELDS)


@transaction.atomic
def directory_user_create(*, actor: Actor, attributes: dict, active: bool | None = None):
    """A new ordinary person with a sign-in only through SSO (no usable password)."""
    _check_attributes(attributes)
    _check_no_privileged_collision(attributes)
    user = get_user_model()(**attributes, is_staff=False, is_superuser=False)
    user.set_unusable_password()
    _save(user)
    audit_record(
        actor=actor,
        action="user.create",
        object_type="user",
        object_id=user.pk,
        after=_snapshot(user),
        reason="created by the directory (SCIM)",
    )
    _set_active(user, active, actor=actor)
    return user


@transaction.atomic
def directory_user_update(*, actor: Actor, user, attributes: dict, active: bool | None = None):
    """Change an ordinary person's directory attributes and/or switch them off or on."""
    _check_attributes(attributes)
    locked = get_user_model().objects.select_for_update().get(pk=user.pk)
    if is_privileged(locked):
        raise PrivilegedAccount(f"user {locked.pk} is a privileged account; {REFUSED_PRIVILEGED}")
    changed = {name: value for name, value in attributes.items() if getattr(locked, name) != value}
    if changed:
        _check_no_privileged_collision(changed, exclude_pk=locked.pk)
        before = {name: getattr(locked, name) for name in changed}
        for name, value in changed.items():
            setattr(locked, name, value)
        _save(locked, update_fields=sorted(changed))
        audit_record(
            actor=actor,
            action="user.update",
            object_type="user",
            object_id=locked.pk,
            before=before,
            after=changed,
            reason="changed by the directory (SCIM)",
        )
    _set_active(locked, active, actor=actor)
    return locked


@transaction.atomic
def directory_user_deactivate(*, actor: Actor, user) -> bool:
    """The directory's DELETE: switch an ordinary person off (idempotent). Returns False if already off."""
    locked = get_user_model().objects.select_for_update().get(pk=user.pk)
    if is_privileged(locked):
        raise PrivilegedAccount(f"user {locked.pk} is a privileged account; {REFUSED_PRIVILEGED}")
    return user_deactivate(user=locked, actor=actor, source="scim", reason="directory: deleted")
