"""Forms for deciding and withdrawing requests. They parse input only; the rules live in services."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from approvals.choices import DecisionKind


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
        self.fields["scopes"].widget.choices = [(s, s) for s in choices]

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        kwargs = {"reason": data.get("reason") or ""}
        if data["decision"] == DecisionKind.APPROVE:
            if data.get("narrow") or data.get("scopes"):
                kwargs["scopes"] = data.get("scopes") or []
            if data.get("ttl_seconds"):
                kwargs["ttl_seconds"] = data["ttl_seconds"]
        return kwargs


class WithdrawForm(forms.Form):
    reason = forms.CharField(label=_("Why (optional)"), required=False, max_length=2000)
