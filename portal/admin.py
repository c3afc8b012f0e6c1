from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal.models import ApiToken, AuditEvent, LogCheckpoint, User


@admin.register(User)
class RegistrarUserAdmin(UserAdmin):
    fieldsets = UserAdmin.fieldsets + (
        ("Registrar", {"fields": ("is_service_account", "manager", "external_id", "deactivated_at",
                                  "deactivation_source")}),
    )
    list_display = ("username", "email", "first_name", "last_name", "is_active", "is_service_account")
    list_filter = ("is_active", "is_service_account", "groups")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "rights", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at", "last_used_at")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
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
class LogCheckpointAdmin(admin.ModelAdmin):
    """Read-only: the audit log's signed checkpoints (the database refuses changes anyway)."""

    list_display = ("tree_size", "root_hash", "created_at")
    readonly_fields = ("tree_size", "root_hash", "note", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
