"""Django admin, audited: every create, change and delete made through the admin writes ONE audit event.

Every ModelAdmin on the site is an :class:`AuditedAdminMixin` (apps use it as a base; ``portal.admin``
wraps the admins Django and allauth register). The mixin captures the object's row **from the database**
before the change (``save_model``, before the write) and after it (``save_related``, once many-to-many
fields such as ``groups`` are saved), and records the difference in the change's transaction:

========================  ======================================================================
action                    ``<audit_object_type>.admin_create`` / ``.admin_change`` / ``.admin_delete``
before / after            create: after = the whole row; change: the changed fields only, old and
                          new; delete: before = the whole row
secrets                   :attr:`audit_secret_fields`, encrypted fields and anything
                          :func:`portal.censor.censor` knows are recorded as ``"********"``: the event
                          says *that* they changed, never what to
reason                    ``Django admin: changed <fields>`` (or the action's name)
========================  ======================================================================

A save that changes nothing writes no event. Admin actions are wrapped the same way (one event per object
they changed), except those marked :func:`audited_by_service`, whose service audits itself; an admin whose
saves go through a service sets :attr:`AuditedAdminMixin.audited_by_service`. Inlines must be read-only.

Deleting is a separate decision per admin (``has_delete_permission``); where it is allowed it is audited
here, for the delete view and the bulk "delete selected" action alike.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib import admin
from django.db import models, router, transaction

from portal.audit import Actor, audit_record
from portal.censor import CENSORED
from portal.crypto import EncryptedJSONField

VERBS = ("create", "change", "delete")


def audited_by_service(action: Callable) -> Callable:
    """Mark an admin action whose service writes its own audit event (the mixin then adds none)."""
    action.audited_by_service = True  # type: ignore[attr-defined]
    return action


def _label(related: models.Model) -> Any:
    """How a many-to-many member appears in an event: its natural key (group name, username) or pk."""
    natural_key = getattr(related, "natural_key", None)
    if callable(natural_key):
        key = natural_key()
        return key[0] if len(key) == 1 else ".".join(str(part) for part in key)
    return related.pk


def _comparable(value: Any) -> Any:
    # Admin forms edit times to the second: a save that only drops microseconds changed nothing anyone chose.
    return value.replace(microsecond=0) if isinstance(value, dt.datetime) else value


def audit_snapshot(model: type[models.Model], pk: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The row's fields and many-to-many members as the database holds them for ``pk`` (``{}``: no row)."""
    row = model._base_manager.filter(pk=pk).first()
    if row is None:
        return {}
    snapshot: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if field.name not in exclude:
            snapshot[field.name] = field.value_from_object(row)
    for field in model._meta.many_to_many:
        if field.name not in exclude:
            snapshot[field.name] = sorted((_label(o) for o in getattr(row, field.name).all()), key=str)
    return snapshot


def secret_fields_of(model: type[models.Model], extra: tuple[str, ...] = ()) -> set[str]:
    """The fields an event records as changed without their value: encrypted ones, and ``extra``."""
    return {f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedJSONField)} | set(extra)


def _masked(values: dict[str, Any] | None, secret: set[str]) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: (CENSORED if k in secret and v not in (None, "", {}, []) else v) for k, v in values.items()}


def audit_admin_event(
    *,
    actor: Actor,
    object_type: str,
    verb: str,
    pk: Any,
    before: dict | None,
    after: dict | None,
    secret_fields: set[str] | frozenset[str] = frozenset(),
    reason: str = "",
    via: str = "Django admin",
) -> bool:
    """Record one ``<object_type>.admin_<verb>`` event; for a change, only the fields that differ (none: no event).

    Django admin (the mixin below) and the configuration endpoints of /api/v1/ (``via="API"``) both record
    through this, so an admin's change reads the same whichever way it was made.
    """
    if verb not in VERBS:
        raise ValueError(f"verb must be one of {VERBS}, not {verb!r}")
    changed: list[str] = []
    if verb == "change":
        before, after = before or {}, after or {}
        changed = sorted(
            k for k in before.keys() | after.keys() if _comparable(before.get(k)) != _comparable(after.get(k))
        )
        if not changed:
            return False
        before = {k: before.get(k) for k in changed}
        after = {k: after.get(k) for k in changed}
    secret = set(secret_fields)
    audit_record(
        actor=actor,
        action=f"{object_type}.admin_{verb}",
        object_type=object_type,
        object_id=pk,
        before=_masked(before, secret),
        after=_masked(after, secret),
        reason=reason or (f"{via}: changed {', '.join(changed)}" if changed else f"{via}: {verb}"),
    )
    return True


M = TypeVar("M", bound=models.Model)


def save_audited(
    obj: M,
    *,
    actor: Actor,
    object_type: str,
    changes: dict[str, Any],
    members: dict[str, list] | None = None,
    reason: str = "",
    via: str = "API",
    exclude: tuple[str, ...] = (),
    secret_fields: tuple[str, ...] = (),
) -> M:
    """Create or change ``obj`` as a Django admin form would, outside the admin: set ``changes``, validate with
    ``full_clean`` (raises :class:`django.core.exceptions.ValidationError`; nothing written), save, set the
    many-to-many ``members``, and record ONE ``admin_create``/``admin_change`` event, all in one transaction.
    ``exclude`` / ``secret_fields``: as the model's admin sets ``audit_exclude`` / ``audit_secret_fields``."""
    model = type(obj)
    creating = obj.pk is None
    with transaction.atomic(using=router.db_for_write(model)):
        before = None if creating else audit_snapshot(model, obj.pk, exclude=exclude)
        for name, value in changes.items():
            setattr(obj, name, value)
        obj.full_clean()
        obj.save()
        for name, values in (members or {}).items():
            getattr(obj, name).set(values)
        audit_admin_event(
            actor=actor,
            object_type=object_type,
            verb="create" if creating else "change",
            pk=obj.pk,
            before=before,
            after=audit_snapshot(model, obj.pk, exclude=exclude),
            secret_fields=secret_fields_of(model, secret_fields),
            reason=reason,
            via=via,
        )
    return obj


if TYPE_CHECKING:  # what the mixin is mixed into, for the type checker
    _AdminBase = admin.ModelAdmin
else:
    _AdminBase = object


class AuditedAdminMixin(_AdminBase):
    """Put first in the bases: ``class XAdmin(AuditedAdminMixin, admin.ModelAdmin)``."""

    #: ``object_type`` of the events (what the rest of Registrar calls this model); default: ``app.model``.
    audit_object_type: str = ""
    #: Fields left out of snapshots: bookkeeping that is not a decision (``last_login``).
    audit_exclude: tuple[str, ...] = ()
    #: Fields recorded as changed without their value (encrypted fields always are).
    audit_secret_fields: tuple[str, ...] = ()
    #: Saves go through a service that writes its own audit event: the mixin records none for them.
    audited_by_service: bool = False

    # --- snapshots --------------------------------------------------------------------------------

    @property
    def audit_type(self) -> str:
        return self.audit_object_type or self.model._meta.label_lower

    def _secret_fields(self) -> set[str]:
        return secret_fields_of(self.model, self.audit_secret_fields)

    def audit_snapshot(self, obj: models.Model) -> dict[str, Any]:
        """The object's fields and many-to-many members, as the database holds them for ``obj.pk``."""
        return audit_snapshot(self.model, obj.pk, exclude=self.audit_exclude)

    def _masked(self, values: dict[str, Any] | None) -> dict[str, Any] | None:
        return _masked(values, self._secret_fields())

    # --- recording --------------------------------------------------------------------------------

    def audit_admin_change(
        self, request, *, verb: str, pk: Any, before: dict | None, after: dict | None, reason: str = ""
    ) -> bool:
        """Record one admin event; for a change, only the fields that differ (none differ: no event)."""
        return audit_admin_event(
            actor=Actor.user(request.user),
            object_type=self.audit_type,
            verb=verb,
            pk=pk,
            before=before,
            after=after,
            secret_fields=self._secret_fields(),
            reason=reason,
        )

    def _pending(self, request) -> dict[int, dict | None]:
        if not hasattr(request, "_registrar_admin_audit"):
            request._registrar_admin_audit = {}
        return request._registrar_admin_audit

    # --- ModelAdmin hooks -------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        if not self.audited_by_service:
            self._pending(request)[id(obj)] = self.audit_snapshot(obj) if change and obj.pk is not None else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if self.audited_by_service:
            return
        obj = form.instance
        before = self._pending(request).pop(id(obj), None)
        after = self.audit_snapshot(obj)
        self.audit_admin_change(request, verb="change" if change else "create", pk=obj.pk, before=before, after=after)

    def delete_model(self, request, obj):
        with transaction.atomic(using=router.db_for_write(self.model)):
            pk, before = obj.pk, self.audit_snapshot(obj)
            super().delete_model(request, obj)
            self.audit_admin_change(request, verb="delete", pk=pk, before=before, after=None)

    def delete_queryset(self, request, queryset):
        with transaction.atomic(using=router.db_for_write(self.model)):
            befores = [(obj.pk, self.audit_snapshot(obj)) for obj in queryset]
            super().delete_queryset(request, queryset)
            for pk, before in befores:
                self.audit_admin_change(request, verb="delete", pk=pk, before=before, after=None)

    def get_actions(self, request):
        audited = {}
        for action in super().get_actions(request).values():
            if action is None:
                continue
            func, name, description = action
            if name != "delete_selected" and not getattr(func, "audited_by_service", False):
                func = self._audited_action(func, name)
            audited[name] = (func, name, description)
        return audited

    def _audited_action(self, func: Callable, name: str) -> Callable:
        """Run an action in one transaction and record one change event per object it changed."""

        @functools.wraps(func)
        def run(modeladmin, request, queryset):
            with transaction.atomic(using=router.db_for_write(modeladmin.model)):
                befores = [(obj, modeladmin.audit_snapshot(obj)) for obj in queryset]
                response = func(modeladmin, request, queryset)
                for obj, before in befores:
                    after = modeladmin.audit_snapshot(obj)
                    modeladmin.audit_admin_change(
                        request,
                        verb="change" if after else "delete",
                        pk=obj.pk,
                        before=before,
                        after=after or None,
                        reason=f"Django admin action: {name}",
                    )
            return response

        return run


class AuditedModelAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """The ModelAdmin every app's admin.py starts from."""


class ReadOnlyInlineMixin:
    """An inline that shows related rows and changes none (audited admins take no inline writes)."""

    can_delete = False
    extra = 0
    max_num: int | None = 0

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
