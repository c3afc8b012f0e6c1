"""Forms for deciding and withdrawing requests. They parse input only; the rules live in services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.utils.translation import gettext_lazy as _

from approvals.choices import DecisionKind

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from portal.models import User


class ScopeListField(forms.Field):
    """A list of scope names from repeated form values (checkboxes). Widening is judged by the service."""

    widget = forms.CheckboxSelectMultiple

    def to_python(self, value):
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        return [str(v).strip() for v in value if str(v).strip()]


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=DecisionKind.choices)
    reason = forms.CharField(
        label=_("Reason"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
    # "narrow" marks that the scope checkboxes were on the form, so "none ticked" means "no scopes"
    # (refused by the service) rather than "not narrowed".
    narrow = forms.BooleanField(required=False, widget=forms.HiddenInput)
    scopes = ScopeListField(label=_("Grant scopes"), required=False)
    ttl_seconds = forms.IntegerField(label=_("Lifetime (seconds)"), required=False, min_value=1)

    def __init__(self, *args, choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.scope_choices = list(choices)
        self.fields["scopes"].widget.choices = [(s, s) for s in choices]

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        kwargs = {"reason": data.get("reason") or ""}
        if data["decision"] == DecisionKind.APPROVE:
            # A request for no scopes (a CIMD client that only signs users in) has nothing to narrow.
            if data.get("scopes") or (data.get("narrow") and self.scope_choices):
                kwargs["scopes"] = data.get("scopes") or []
            if data.get("ttl_seconds"):
                kwargs["ttl_seconds"] = data["ttl_seconds"]
        return kwargs


class WithdrawForm(forms.Form):
    reason = forms.CharField(label=_("Why (optional)"), required=False, max_length=2000)


class PreRegistrationForm(forms.Form):
    """Pre-register a client by hand (docs/cimd.md): pasted RFC 7591 metadata or a CIMD URL, and the governance
    fields. Parsing only: ``approvals.preregistration`` validates and decides."""

    SOURCES = (("cimd", _("Client ID Metadata Document URL")), ("metadata", _("RFC 7591 metadata (JSON)")))

    owner: forms.ModelChoiceField[User] = forms.ModelChoiceField(
        label=_("Owner"), queryset=None, required=False, help_text=_("Admins may submit for any owner.")
    )
    source = forms.ChoiceField(label=_("Describe the client by"), choices=SOURCES, widget=forms.RadioSelect)
    cimd_url = forms.CharField(
        label=_("Metadata document URL"),
        required=False,
        max_length=2000,
        help_text=_("The https URL the client uses as its client_id, e.g. https://app.example.com/oauth/client.json"),
    )
    metadata = forms.CharField(
        label=_("Client metadata (JSON)"),
        required=False,
        max_length=64 * 1024,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        help_text=_("The body an agent would POST to /oauth2/register."),
    )
    purpose = forms.CharField(label=_("Purpose"), required=False, max_length=500)
    scope = forms.CharField(label=_("Scopes"), required=False, max_length=2000, help_text=_("Space-separated."))
    requested_ttl = forms.IntegerField(label=_("Lifetime (seconds)"), required=False, min_value=1)
    internal_only = forms.BooleanField(label=_("Internal only"), required=False)

    def __init__(self, *args, owners: QuerySet[User] | None = None, adopting: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if adopting:  # a shadow client is described by the metadata its IdP reported, edited here
            del self.fields["cimd_url"]
            source = self.fields["source"]
            assert isinstance(source, forms.ChoiceField)  # declared above
            source.choices = [self.SOURCES[1]]
            self.fields["metadata"].help_text = _("What the IdP reported for this client; correct it if needed.")
            self.fields["owner"].help_text = _("Who answers for this client once it is adopted.")
        if owners is None:
            del self.fields["owner"]
        else:
            owner = self.fields["owner"]
            assert isinstance(owner, forms.ModelChoiceField)  # declared above
            owner.queryset = owners

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns; its stub says it may be None
        source = data.get("source")
        if source == "cimd" and not data.get("cimd_url"):
            self.add_error("cimd_url", _("Give the URL of the client's metadata document."))
        if source == "metadata":
            from portal import jsonbody

            try:
                parsed = jsonbody.loads(data.get("metadata") or "")
            except ValueError as exc:
                self.add_error("metadata", _("Not valid JSON: %(why)s") % {"why": exc})
            else:
                if not isinstance(parsed, dict):
                    self.add_error("metadata", _("The metadata must be a JSON object."))
                data["metadata_object"] = parsed
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        governance = {
            "purpose": data.get("purpose") or None,
            "scope": data.get("scope") or None,
            "requested_ttl": data.get("requested_ttl"),
            "internal_only": True if data.get("internal_only") else None,
        }
        kwargs = {"owner": data.get("owner"), "governance": {k: v for k, v in governance.items() if v is not None}}
        if data["source"] == "cimd":
            kwargs["cimd_url"] = data["cimd_url"].strip()
        else:
            kwargs["metadata"] = data["metadata_object"]
        return kwargs
