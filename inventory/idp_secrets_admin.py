"""Django admin for IdP credentials: a write-only secrets form and a "test connection" button and action.

The connection's change form never shows ``secrets`` (``IdPConnectionAdmin.exclude``); its "Set credentials"
button opens :class:`IdPSecretsForm`, which lists the credentials the connection's kind uses, says whether
each is set, and takes new values in password inputs that are never filled back in. Saving goes through
:func:`inventory.idp_secrets.idp_secrets_set` (one audit event naming what changed, without values); "Test
connection" calls :func:`inventory.idp_secrets.idp_connection_test` and reports in the admin's messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from inventory.idp_secrets import IdPSecretError, idp_connection_test, idp_secret_status, idp_secrets_set, secret_names
from portal.audit import Actor
from portal.auditedadmin import audited_by_service

CLEAR_PREFIX = "clear__"


class IdPSecretsForm(forms.Form):
    """One password input per credential the kind uses (blank = keep), and a "clear" box per stored one."""

    def __init__(self, *args, idp, **kwargs):
        super().__init__(*args, **kwargs)
        self.idp = idp
        required, _optional = secret_names(idp.kind)
        self.status = idp_secret_status(idp)
        for name, is_set in self.status.items():
            state = "set" if is_set else "not set"
            self.fields[name] = forms.CharField(
                label=name,
                required=False,
                strip=True,
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
                help_text=f"{'required' if name in required else 'optional'} · currently {state}; "
                "leave blank to keep it",
            )
            if is_set:
                self.fields[CLEAR_PREFIX + name] = forms.BooleanField(label=f"clear {name}", required=False)

    def values(self) -> dict[str, str]:
        return {name: self.cleaned_data[name] for name in self.status if self.cleaned_data.get(name)}

    def cleared(self) -> list[str]:
        return [name for name in self.status if self.cleaned_data.get(CLEAR_PREFIX + name)]

    def value_fields(self):
        return [self[name] for name in self.status]

    def clear_fields(self):
        return [self[CLEAR_PREFIX + name] for name in self.status if CLEAR_PREFIX + name in self.fields]


@admin.action(description="Test connection with the stored credentials")
@audited_by_service  # idp_connection_test records idp.connection_test
def test_connections(modeladmin, request, queryset):
    for idp in queryset:
        _report(request, idp, idp_connection_test(idp=idp, actor=Actor.user(request.user)))


def _report(request, idp, result) -> None:
    if result.ok:
        messages.success(request, f"{idp.name}: connection works — {result.summary()}")
    else:
        messages.error(request, f"{idp.name}: connection test failed — {result.summary()}")


if TYPE_CHECKING:  # what the mixin is mixed into, for the type checker
    _AdminBase = admin.ModelAdmin
else:
    _AdminBase = object


class IdPSecretsAdminMixin(_AdminBase):
    """Add to the IdP connection's ModelAdmin (before the ModelAdmin base)."""

    change_form_template = "admin/inventory/idpconnection/change_form.html"
    actions = [test_connections]

    def get_urls(self):
        prefix = f"{self.model._meta.app_label}_{self.model._meta.model_name}"
        return [
            path(
                "<path:object_id>/secrets/",
                self.admin_site.admin_view(self.secrets_view),
                name=f"{prefix}_secrets",
            ),
            path(
                "<path:object_id>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name=f"{prefix}_test_connection",
            ),
            *super().get_urls(),
        ]

    def _object_or_404(self, request, object_id):
        idp = self.get_object(request, unquote(object_id))
        if idp is None:
            raise Http404("no such IdP connection")
        if not self.has_change_permission(request, idp):
            raise PermissionDenied
        return idp

    def _change_url(self, idp) -> str:
        return reverse(f"admin:{self.model._meta.app_label}_{self.model._meta.model_name}_change", args=[idp.pk])

    def secrets_view(self, request, object_id):
        idp = self._object_or_404(request, object_id)
        form = IdPSecretsForm(request.POST or None, idp=idp)
        if request.method == "POST" and form.is_valid():
            try:
                changed = idp_secrets_set(
                    idp=idp, actor=Actor.user(request.user), values=form.values(), clear=form.cleared()
                )
            except IdPSecretError as exc:
                form.add_error(None, str(exc))
            else:
                if changed:
                    messages.success(request, f"{idp.name}: credentials saved ({', '.join(changed)}).")
                else:
                    messages.info(request, f"{idp.name}: nothing changed.")
                return HttpResponseRedirect(self._change_url(idp))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Credentials of {idp.name}",
            "opts": self.model._meta,
            "original": idp,
            "form": form,
            "change_url": self._change_url(idp),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/inventory/idpconnection/secrets.html", context)

    def test_connection_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        idp = self._object_or_404(request, object_id)
        _report(request, idp, idp_connection_test(idp=idp, actor=Actor.user(request.user)))
        return HttpResponseRedirect(self._change_url(idp))
