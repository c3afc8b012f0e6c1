from django.contrib import admin

from approvals.models import Decision, InitialAccessToken, Policy, RegistrationRequest, TrustedIssuer


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("version", "is_active", "note", "created_at", "created_by")
    readonly_fields = ("version", "created_at", "created_by")


@admin.register(InitialAccessToken)
class InitialAccessTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "owner", "purpose", "uses", "max_uses", "expires_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "uses", "created_at", "last_used_at")
    list_select_related = ("owner",)


@admin.register(TrustedIssuer)
class TrustedIssuerAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "issuer", "subject", "owner", "enabled")
    list_filter = ("kind", "enabled")


class DecisionInline(admin.TabularInline):
    model = Decision
    extra = 0
    can_delete = False
    readonly_fields = ("approver", "kind", "reason", "granted_scopes", "granted_ttl", "created_at")


@admin.register(RegistrationRequest)
class RegistrationRequestAdmin(admin.ModelAdmin):
    list_display = ("public_id", "client_name", "state", "risk_tier", "owner", "created_at")
    list_filter = ("state", "risk_tier", "via", "kind")
    search_fields = ("public_id", "client_name", "purpose")
    readonly_fields = [f.name for f in RegistrationRequest._meta.fields]
    inlines = [DecisionInline]

    def has_add_permission(self, request):
        return False
