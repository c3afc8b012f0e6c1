from django.contrib import admin

from inventory.models import Client, IdPConnection, OutboxEntry, ScopeDefinition, Team


@admin.register(ScopeDefinition)
class ScopeDefinitionAdmin(admin.ModelAdmin):
    list_display = ("name", "sensitivity", "category", "is_active")
    list_filter = ("sensitivity", "category", "is_active")
    search_fields = ("name", "description")


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "manager", "notify_email")
    filter_horizontal = ("members",)


@admin.register(IdPConnection)
class IdPConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "enabled", "is_default", "last_reconciled_at")
    list_filter = ("kind", "enabled")
    exclude = ("secrets",)  # credentials are set through the connection form / env, never displayed


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """Read-mostly: state changes go through inventory.lifecycle, not the admin form."""

    list_display = ("name", "registration_id", "state", "risk_tier", "owner", "idp", "expires_at")
    list_filter = ("state", "risk_tier", "idp", "created_via", "managed", "sync_failed")
    search_fields = ("name", "registration_id", "idp_client_id", "purpose")
    readonly_fields = [f.name for f in Client._meta.fields if f.name not in ("purpose",)]
    exclude = ("idp_state",)
    list_select_related = ("owner", "idp")

    def has_add_permission(self, request):
        return False


@admin.register(OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    list_display = ("id", "client", "operation", "status", "attempts", "next_attempt_at", "delivered_at")
    list_filter = ("status", "operation", "idp")
    list_select_related = ("client",)
    readonly_fields = [f.name for f in OutboxEntry._meta.fields]


# --- leaver signal from the admin ----------------------------------------------------------------
# portal.admin registers the User admin but may not import inventory (import direction), so the
# "deactivate" action that routes through inventory.leavers is attached here.

@admin.action(description="Deactivate selected people (orphans their clients)")
def deactivate_users(modeladmin, request, queryset):
    from inventory.leavers import user_deactivate
    from portal.audit import Actor

    done = sum(
        user_deactivate(user=user, actor=Actor.user(request.user), source="admin", reason="admin deactivation")
        for user in queryset
    )
    modeladmin.message_user(request, f"{done} person(s) deactivated; the orphan sweep will act on their clients.")


def _attach_user_admin_action() -> None:
    from django.contrib.auth import get_user_model

    user_admin = admin.site._registry.get(get_user_model())
    if user_admin is not None and deactivate_users not in (user_admin.actions or []):
        user_admin.actions = [*(user_admin.actions or []), deactivate_users]


_attach_user_admin_action()
