"""Admin for people, API tokens and the audit chain; and every admin Django or allauth registers, audited.

Everything on the admin site writes one audit event per change (:mod:`portal.auditedadmin`). People and
tokens are never deleted here: people own clients and audit history (deactivate them; the leaver action is
inventory's, added through :func:`user_admin_action_register` by ``inventory.admin``), tokens are revoked. The role groups cannot be renamed or deleted here (that
would silently take a role from everyone holding it).
"""

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import router, transaction

from portal.audit import Actor
from portal.auditedadmin import AuditedAdminMixin, AuditedModelAdmin, audited_by_service
from portal.models import ApiToken, AuditEvent, LogCheckpoint, User
from portal.roles import Role
from portal.services import USER_AUDIT_EXCLUDE, USER_AUDIT_SECRET_FIELDS, ApiTokenError, api_token_revoke


@admin.register(User)
class RegistrarUserAdmin(AuditedAdminMixin, UserAdmin):
    audit_object_type = "user"
    audit_exclude = USER_AUDIT_EXCLUDE
    audit_secret_fields = USER_AUDIT_SECRET_FIELDS
    fieldsets = (
        *(UserAdmin.fieldsets or ()),
        (
            "Registrar",
            {"fields": ("is_service_account", "manager", "external_id", "deactivated_at", "deactivation_source")},
        ),
    )
    # Written by the leaver services (inventory.leavers), which record who switched someone off and how.
    readonly_fields = ("deactivated_at", "deactivation_source", "last_login", "date_joined")
    list_display = ("username", "email", "first_name", "last_name", "is_active", "is_service_account")
    list_filter = ("is_active", "is_service_account", "groups")
    actions: list = []  # bulk actions the apps add (user_admin_action_register)

    def has_delete_permission(self, request, obj=None):
        return False  # people own clients and audit history: deactivate instead

    def user_change_password(self, request, id, form_url=""):
        """The password form saves outside save_model: audit it here (the hash is never recorded)."""
        if request.method != "POST":
            return super().user_change_password(request, id, form_url)
        with transaction.atomic(using=router.db_for_write(self.model)):
            user = self.get_object(request, unquote(id))
            before = self.audit_snapshot(user) if user is not None else None
            response = super().user_change_password(request, id, form_url)
            if user is not None and before is not None and response.status_code == 302:
                self.audit_admin_change(
                    request,
                    verb="change",
                    pk=user.pk,
                    before=before,
                    after=self.audit_snapshot(user),
                    reason="Django admin: password set",
                )
        return response


def user_admin_action_register(action) -> None:
    """An app adds a bulk action to the people admin (inventory: deactivate, which orphans their clients).
    The kernel imports no app, so the app registers it from its own admin module."""
    if action not in RegistrarUserAdmin.actions:
        RegistrarUserAdmin.actions = [*RegistrarUserAdmin.actions, action]


@admin.action(description="Revoke selected API tokens")
@audited_by_service
def revoke_api_tokens(modeladmin, request, queryset):
    done = 0
    for token in queryset:
        try:
            api_token_revoke(actor=Actor.user(request.user), token=token, reason="revoked in Django admin")
            done += 1
        except ApiTokenError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
    modeladmin.message_user(request, f"{done} API token(s) revoked.")


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedModelAdmin):
    """Tokens are minted by ``create_api_token`` (shown once) and revoked by the action; never re-owned or
    un-revoked."""

    audit_object_type = "api_token"
    list_display = ("name", "user", "prefix", "rights", "created_at", "expires_at", "last_used_at", "revoked_at")
    readonly_fields = ("user", "prefix", "token_hash", "created_at", "last_used_at", "revoked_at")
    actions = [revoke_api_tokens]

    def has_add_permission(self, request):
        return False  # python manage.py create_api_token: the token is shown once

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(AuditedModelAdmin):
    """Read-only: the database refuses changes anyway."""

    list_display = ("id", "log_index", "occurred_at", "actor_label", "action", "object_type", "object_id")
    list_filter = ("action", "actor_type", "object_type")
    search_fields = ("object_id", "actor_label", "action")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LogCheckpoint)
class LogCheckpointAdmin(AuditedModelAdmin):
    """Read-only: the audit log's signed checkpoints (the database refuses changes anyway)."""

    audit_object_type = "log_checkpoint"
    list_display = ("tree_size", "root_hash", "created_at")
    readonly_fields = ("tree_size", "root_hash", "note", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RegistrarGroupAdmin(AuditedAdminMixin, GroupAdmin):
    """Roles are groups: their names are fixed and they are never deleted (members are edited on people)."""

    audit_object_type = "group"

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.name in {r.value for r in Role}:
            return ("name",)
        return ()

    def has_delete_permission(self, request, obj=None):
        return False


# Admins registered by Django and allauth before this module runs, wrapped in the audited mixin.
# Fields that hold secrets are named so the events say only that they changed.
_THIRD_PARTY: dict[str, dict[str, Any]] = {
    "mfa.authenticator": {"audit_object_type": "mfa_authenticator", "audit_secret_fields": ("data",)},
    "socialaccount.socialapp": {"audit_object_type": "social_app", "audit_secret_fields": ("secret",)},
    "socialaccount.socialtoken": {
        "audit_object_type": "social_token",
        "audit_secret_fields": ("token", "token_secret"),
    },
    "socialaccount.socialaccount": {"audit_object_type": "social_account"},
    "account.emailaddress": {"audit_object_type": "email_address"},
}


def _audit_every_registered_admin(site: admin.AdminSite) -> None:
    if site.is_registered(Group) and not isinstance(site._registry[Group], AuditedAdminMixin):
        site.unregister(Group)
        site.register(Group, RegistrarGroupAdmin)
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, AuditedAdminMixin):
            continue
        base = type(model_admin)
        audited = type(
            f"Audited{base.__name__}",
            (AuditedAdminMixin, base),
            {"__module__": __name__, **_THIRD_PARTY.get(model._meta.label_lower, {})},
        )
        site.unregister(model)
        site.register(model, audited)


_audit_every_registered_admin(admin.site)
