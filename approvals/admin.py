"""Admin for intake configuration: policy versions, initial access tokens, trusted issuers; requests read-only.

Every change writes one audit event (:mod:`portal.auditedadmin`). Requests, decisions, tokens and policy
versions are never deleted here: they explain who approved what. Tokens are minted at ``/tokens/`` (or
``mint_access_token``) and revoked through the token service, never re-owned or un-revoked here.
"""

import json

from django import forms
from django.contrib import admin, messages

from approvals.models import (
    AnonymousProfile,
    Decision,
    InitialAccessToken,
    Policy,
    RegistrationRequest,
    TrustedCimdDomain,
    TrustedIssuer,
)
from portal.auditedadmin import AuditedModelAdmin, ReadOnlyInlineMixin, audited_by_service


class ThresholdsField(forms.JSONField):
    """JSON shown one threshold per line, sorted, so the whole policy can be read and edited."""

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value, indent=2, sort_keys=True)
        return super().prepare_value(value)


class PolicyAdminForm(forms.ModelForm):
    """The editor starts from every threshold of the version it edits (the active one when adding), so a
    publish changes only what the admin changes; a key left out keeps that value, an unknown key is refused."""

    class Meta:
        model = Policy
        fields = ("thresholds", "note")
        field_classes = {"thresholds": ThresholdsField}
        widgets = {"thresholds": forms.Textarea(attrs={"rows": 18, "cols": 60})}
        help_texts = {
            "thresholds": "Every threshold, as JSON. Change the values you mean to change; a key you remove keeps "
            "its current value. Saving publishes a new version and lists what changed."
        }

    def __init__(self, *args, **kwargs):
        from approvals.policy_store import effective_thresholds

        super().__init__(*args, **kwargs)
        base = self._base()
        self.base_thresholds = effective_thresholds(base.thresholds if base else None)
        if not self.is_bound:
            self.initial["thresholds"] = self.base_thresholds

    def _base(self) -> Policy | None:
        """The version this edit starts from: the one opened, or the active one for a new version."""
        if self.instance.pk:
            return self.instance
        return Policy.objects.filter(is_active=True).first()

    def clean_thresholds(self):
        from approvals.policy_store import PolicyError, unknown_thresholds, validate_thresholds

        submitted = self.cleaned_data["thresholds"]
        if not isinstance(submitted, dict):
            raise forms.ValidationError("Thresholds must be a JSON object of name: value.")
        unknown = unknown_thresholds(submitted)
        if unknown:
            raise forms.ValidationError(
                "Unknown threshold(s): " + ", ".join(unknown) + ". Known: " + ", ".join(sorted(self.base_thresholds))
            )
        thresholds = self.base_thresholds | submitted
        try:
            validate_thresholds(thresholds)
        except PolicyError as exc:
            raise forms.ValidationError(str(exc))
        return thresholds


@admin.register(Policy)
class PolicyAdmin(AuditedModelAdmin):
    """Saving never edits a version: it publishes a new one (approvals.policy_store.policy_publish)."""

    audit_object_type = "policy"
    audited_by_service = True  # policy_publish records policy.publish
    form = PolicyAdminForm
    list_display = ("version", "is_active", "note", "created_at", "created_by")
    readonly_fields = ("version", "is_active", "created_at", "created_by", "changes")

    @admin.display(description="Changes from the previous version")
    def changes(self, obj):
        from django.utils.html import format_html, format_html_join

        from approvals.policy_store import threshold_changes

        if obj is None or not obj.pk:
            return "—"
        previous = Policy.objects.filter(version__lt=obj.version).order_by("-version").first()
        if previous is None:
            return "First version."
        changed = threshold_changes(previous.thresholds, obj.thresholds)
        if not changed:
            return f"None: the same thresholds as v{previous.version}."
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li><code>{}</code>: {} → {}</li>", ((n, o, v) for n, o, v in changed)),
        )

    def save_model(self, request, obj, form, change):
        from approvals.policy_store import policy_publish, threshold_changes
        from portal.audit import Actor

        active = Policy.objects.filter(is_active=True).first()
        published = policy_publish(
            actor=Actor.user(request.user),
            thresholds=form.cleaned_data["thresholds"],
            note=form.cleaned_data.get("note", ""),
            created_by=request.user,
        )
        # The admin redirects to (and logs) ``obj``: point it at the new version.
        obj.pk, obj.version, obj.is_active = published.pk, published.version, True
        obj._state.adding = False
        changed = threshold_changes(active.thresholds if active else None, published.thresholds)
        what = "; ".join(f"{name}: {old} → {new}" for name, old, new in changed) or "no threshold changed"
        since = f" from v{active.version}" if active else ""
        self.message_user(request, f"Published policy v{published.version}. Changed{since}: {what}.")

    def save_related(self, request, form, formsets, change):
        pass  # Policy has no relations to save; the publish above did all the writing.

    def has_delete_permission(self, request, obj=None):
        return False  # old versions explain old verdicts


class InitialAccessTokenAdminForm(forms.ModelForm):
    class Meta:
        model = InitialAccessToken
        fields = (
            "purpose",
            "team",
            "allowed_scopes",
            "max_ttl_seconds",
            "max_uses",
            "internal_only",
            "allowed_networks",
            "approval_window",
            "idp",
            "expires_at",
        )

    def clean_max_uses(self):
        max_uses = self.cleaned_data["max_uses"]
        if self.instance.pk is not None and max_uses < self.instance.uses:
            raise forms.ValidationError(f"The token has been used {self.instance.uses} times already.")
        return max_uses


@admin.action(description="Revoke selected tokens")
@audited_by_service
def revoke_tokens(modeladmin, request, queryset):
    from approvals.services import TokenError, token_revoke
    from portal.audit import Actor

    done = 0
    for token in queryset:
        try:
            token_revoke(actor=Actor.user(request.user), token=token, reason="revoked in Django admin")
            done += 1
        except TokenError as exc:
            modeladmin.message_user(request, f"{token.prefix}…: {exc}", messages.WARNING)
    modeladmin.message_user(request, f"{done} token(s) revoked.")


@admin.register(InitialAccessToken)
class InitialAccessTokenAdmin(AuditedModelAdmin):
    audit_object_type = "initial_access_token"
    form = InitialAccessTokenAdminForm
    list_display = ("prefix", "owner", "purpose", "uses", "max_uses", "expires_at", "revoked_at")
    # The owner is who every registration made with the token is bound to, and revocation is one-way.
    readonly_fields = ("owner", "prefix", "token_hash", "uses", "created_at", "last_used_at", "revoked_at")
    list_select_related = ("owner",)
    actions = [revoke_tokens]

    def has_add_permission(self, request):
        return False  # minted at /tokens/ or with mint_access_token: the token is shown once

    def has_delete_permission(self, request, obj=None):
        return False  # registrations made with it point at it


@admin.register(TrustedIssuer)
class TrustedIssuerAdmin(AuditedModelAdmin):
    audit_object_type = "trusted_issuer"
    list_display = ("name", "kind", "issuer", "subject", "owner", "enabled")
    list_filter = ("kind", "enabled")


@admin.register(TrustedCimdDomain)
class TrustedCimdDomainAdmin(AuditedModelAdmin):
    """Policy input (docs/cimd.md): documents hosted here, with redirects here, may auto-approve at low."""

    audit_object_type = "trusted_cimd_domain"
    list_display = ("domain", "include_subdomains", "enabled", "note", "created_at")
    list_filter = ("enabled", "include_subdomains")
    search_fields = ("domain", "note")


class AnonymousProfileAdminForm(forms.ModelForm):
    """The profile's rules are checked on save: scopes from the catalogue and low sensitivity only, known
    application types, bare domain names, parseable rates, CIDR blocks for the allowed networks."""

    class Meta:
        model = AnonymousProfile
        fields = (
            "idp",
            "name",
            "enabled",
            "owner",
            "team",
            "purpose",
            "allowed_scopes",
            "allow_loopback",
            "redirect_domains",
            "application_types",
            "max_ttl_seconds",
            "internal_only",
            "max_live_clients",
            "coalesce",
            "coalesce_window_seconds",
            "rate_per_software",
            "rate_per_profile",
            "allowed_networks",
            "approval_window",
        )

    @staticmethod
    def _strings(value, label: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise forms.ValidationError(f"{label} must be a JSON list of non-empty strings")
        return [v.strip() for v in value]

    def clean_allowed_scopes(self):
        from inventory.choices import Sensitivity
        from inventory.models import ScopeDefinition

        scopes = self._strings(self.cleaned_data["allowed_scopes"], "allowed scopes")
        known = dict(ScopeDefinition.objects.filter(name__in=scopes).values_list("name", "sensitivity"))
        unknown = [s for s in scopes if s not in known]
        if unknown:
            raise forms.ValidationError(f"not in the scope catalogue: {', '.join(unknown)}")
        above = [s for s in scopes if known[s] != Sensitivity.LOW]
        if above:
            raise forms.ValidationError(f"anonymous clients get low-sensitivity scopes only: {', '.join(above)}")
        return scopes

    def clean_redirect_domains(self):
        domains = self._strings(self.cleaned_data["redirect_domains"], "redirect domains")
        bad = [d for d in domains if "/" in d or ":" in d or "*" in d or " " in d]
        if bad:
            raise forms.ValidationError(f"bare domain names only (no scheme, port, path or wildcard): {', '.join(bad)}")
        return [d.lower().rstrip(".") for d in domains]

    def clean_application_types(self):
        types = self._strings(self.cleaned_data["application_types"] or ["native", "web"], "application types")
        if set(types) - {"native", "web"}:
            raise forms.ValidationError("application types are native and/or web")
        return types

    def _rate(self, name: str) -> str:
        from approvals.ratelimit import parse_rate

        value = self.cleaned_data[name]
        try:
            parse_rate(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc))
        return value

    def clean_allowed_networks(self):
        from approvals.conditions import validate_networks

        networks = self.cleaned_data["allowed_networks"] or []
        validate_networks(networks)  # ValidationError naming the first bad entry
        return [n.strip() for n in networks]

    def clean_rate_per_software(self):
        return self._rate("rate_per_software")

    def clean_rate_per_profile(self):
        return self._rate("rate_per_profile")


@admin.register(AnonymousProfile)
class AnonymousProfileAdmin(AuditedModelAdmin):
    """Anonymous registration (docs/mcp.md): off by default; every change is audited like any admin edit."""

    audit_object_type = "anonymous_profile"
    form = AnonymousProfileAdminForm
    list_display = ("name", "idp", "enabled", "team", "owner", "coalesce", "max_live_clients", "updated_at")
    list_filter = ("enabled", "coalesce")
    list_select_related = ("idp", "team", "owner")


class DecisionInline(ReadOnlyInlineMixin, admin.TabularInline):
    """Decisions are made in the review queue, where separation of duties is enforced; never here."""

    model = Decision
    readonly_fields = ("approver", "kind", "reason", "granted_scopes", "granted_ttl", "created_at")


@admin.register(RegistrationRequest)
class RegistrationRequestAdmin(AuditedModelAdmin):
    """Read-only: requests change state through the review queue and the registration API."""

    audit_object_type = "registration_request"
    list_display = ("public_id", "client_name", "state", "risk_tier", "owner", "created_at")
    list_filter = ("state", "risk_tier", "via", "kind")
    search_fields = ("public_id", "client_name", "purpose")
    readonly_fields = [f.name for f in RegistrationRequest._meta.fields]
    inlines = [DecisionInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
