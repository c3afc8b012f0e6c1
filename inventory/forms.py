"""Forms for the owner pages and break glass (parse input; the services decide)."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _


class RotateKeyForm(forms.Form):
    jwks = forms.CharField(
        label=_("New public JWKS"),
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        help_text=_('A JSON Web Key Set: {"keys": [...]}. Public keys only; private members are refused.'),
    )
    reason = forms.CharField(label=_("Reason"), required=False, max_length=500)


class TransferForm(forms.Form):
    username = forms.CharField(label=_("New owner (username)"), max_length=150)
    reason = forms.CharField(label=_("Reason"), required=False, max_length=500)

    def clean_username(self):
        user = get_user_model().objects.filter(username=self.cleaned_data["username"]).first()
        if user is None:
            raise forms.ValidationError(_("No person with that username."))
        if not user.is_active:
            raise forms.ValidationError(_("That person is not active."))
        return user


class BreakGlassForm(forms.Form):
    SCOPES = [
        ("owner", _("Every client of an owner (username)")),
        ("team", _("Every client of a team (slug)")),
        ("idp", _("Every client at an IdP (name)")),
        ("lineage", _("A client and all its descendants (registration id)")),
        ("token", _("Everything created under an initial access token (prefix or id)")),
        ("issuer", _("Everything created via a trusted software-statement issuer (id)")),
        ("policy", _("Everything approved under a policy version (number)")),
    ]
    scope = forms.ChoiceField(label=_("Scope"), choices=SCOPES)
    value = forms.CharField(label=_("Which one"), max_length=200)
    action = forms.ChoiceField(label=_("Action"), choices=[("suspend", _("Suspend")), ("retire", _("Retire"))])
    reason = forms.CharField(label=_("Reason"), max_length=500)
