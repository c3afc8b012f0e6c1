from django import forms
from django.contrib import admin

from approvals.models import Decision, InitialAccessToken, Policy, RegistrationRequest, TrustedIssuer


class PolicyAdminForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = ("thresholds", "note")

    def clean_thresholds(self):
        from approvals.policy_store import PolicyError, validate_thresholds

        thresholds = self.cleaned_data["thresholds"]
        try:
            validate_thresholds(thresholds)
        except PolicyError as exc:
            raise forms.ValidationError(str(exc))
        return thresholds


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """Saving never edits a version: it publishes a new one (approvals.policy_store.policy_publish)."""

    form = PolicyAdminForm
    list_display = ("version", "is_active", "note", "created_at", "created_by")
    readonly_fields = ("version", "is_active", "created_at", "created_by")

    def save_model(self, request, obj, form, change):
        from approvals.policy_store import policy_publish
        from portal.audit import Actor

        published = policy_publish(
            actor=Actor.user(request.user),
            thresholds=form.cleaned_data["thresholds"],
            note=form.cleaned_data.get("note", ""),
            created_by=request.user,
        )
        # The admin redirects to (and logs) ``obj``: point it at the new version.
        obj.pk, obj.version, obj.is_active = published.pk, published.version, True
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass  # Policy has no relations to save; the publish above did all the writing.

    def has_delete_permission(self, request, obj=None):
        return False  # old versions explain old verdicts


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
