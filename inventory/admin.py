"""Admin for the catalogue, teams, IdP connections; clients and the outbox read-only.

Every change writes one audit event (:mod:`portal.auditedadmin`). Client state, owner and lifecycle are
not admin fields: they change on the client's pages (``/inventory/<id>/``, ``/inventory/mine/``, break
glass), through ``inventory.lifecycle``. Clients, teams and outbox entries are never deleted here.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from inventory.idp_secrets_admin import IdPSecretsAdminMixin
from inventory.leavers import user_deactivate
from inventory.models import Client, IdPConnection, OutboxEntry, ScopeDefinition, Team
from portal.admin import user_admin_action_register
from portal.audit import Actor
from portal.auditedadmin import AuditedModelAdmin, audited_by_service


@admin.register(ScopeDefinition)
class ScopeDefinitionAdmin(AuditedModelAdmin):
    audit_object_type = "scope"
    list_display = ("name", "sensitivity", "category", "is_active")
    list_filter = ("sensitivity", "category", "is_active")
    search_fields = ("name", "description")


@admin.register(Team)
class TeamAdmin(AuditedModelAdmin):
    audit_object_type = "team"
    list_display = ("name", "manager", "notify_email")
    filter_horizontal = ("members",)

    def has_delete_permission(self, request, obj=None):
        return False  # its clients, tokens and issuers would silently lose their team


@admin.register(IdPConnection)
class IdPConnectionAdmin(IdPSecretsAdminMixin, AuditedModelAdmin):
    audit_object_type = "idp"
    list_display = ("name", "kind", "enabled", "is_default", "last_reconciled_at")
    list_filter = ("kind", "enabled")
    # Credentials are write-only: "Set credentials" (inventory.idp_secrets_admin) or `manage.py set_idp_secret`.
    exclude = ("secrets",)
    readonly_fields = ("last_reconciled_at",)


@admin.register(Client)
class ClientAdmin(AuditedModelAdmin):
    """Read-mostly: state changes go through inventory.lifecycle, not the admin form."""

    audit_object_type = "client"
    list_display = ("name", "registration_id", "state", "risk_tier", "owner", "idp", "expires_at")
    list_filter = ("state", "risk_tier", "idp", "created_via", "managed", "sync_failed")
    search_fields = ("name", "registration_id", "idp_client_id", "purpose")
    readonly_fields = ["lifecycle", *(f.name for f in Client._meta.fields if f.name not in ("purpose",))]
    exclude = ("idp_state",)
    list_select_related = ("owner", "idp")

    @admin.display(description="Lifecycle")
    def lifecycle(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        return format_html(
            'State and owner change on <a href="{}">the client\'s page</a> (suspend, retire, renew, transfer) '
            'or through <a href="{}">break glass</a>: every change there is a checked, audited transition.',
            reverse("inventory:explain", args=[obj.registration_id]),
            reverse("inventory:break-glass"),
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a client is retired or revoked, and its history stays


@admin.register(OutboxEntry)
class OutboxEntryAdmin(AuditedModelAdmin):
    """Read-only: a dead entry is retried from /inventory/sync-failures/; deleting one would drop a change
    (a disable, a delete) the IdP must still receive."""

    audit_object_type = "outbox_entry"
    list_display = ("id", "client", "operation", "status", "attempts", "next_attempt_at", "delivered_at")
    list_filter = ("status", "operation", "idp")
    list_select_related = ("client",)
    readonly_fields = [f.name for f in OutboxEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- leaver action on the people admin ----------------------------------------------------------
# portal.admin registers the User admin but imports no app, so the "deactivate" action that routes through
# inventory.leavers is registered with it here.


@admin.action(description="Deactivate selected people (orphans their clients)")
@audited_by_service  # user_deactivate records user.deactivate
def deactivate_users(modeladmin, request, queryset):
    done = sum(
        user_deactivate(user=user, actor=Actor.user(request.user), source="admin", reason="admin deactivation")
        for user in queryset
    )
    modeladmin.message_user(request, f"{done} person(s) deactivated; the orphan sweep will act on their clients.")


user_admin_action_register(deactivate_users)
