"""Sync failures: outbox entries that could not be delivered to an IdP (admins).

Each row has Retry; a dead disable or delete also has "Mark resolved" with a reason, for what only a person
can settle at the IdP (a refused management token, a client whose id Registrar never learnt).
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views import View
from django.views.generic import TemplateView

from inventory.choices import OutboxOperation, OutboxStatus
from inventory.models import Client, OutboxEntry
from inventory.outbox import OutboxError, outbox_resolve, outbox_retry
from portal.audit import Actor
from portal.censor import censor
from portal.roles import Role, RoleRequiredMixin

PAGE_SIZE = 50


class SyncFailuresView(RoleRequiredMixin, TemplateView):
    required_roles = (Role.ADMIN,)
    template_name = "inventory/sync_failures.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        dead = (
            OutboxEntry.objects.filter(status=OutboxStatus.DEAD)
            .select_related("client", "idp")
            .order_by("-next_attempt_at", "-id")
        )
        page = Paginator(dead, PAGE_SIZE).get_page(self.request.GET.get("page"))
        secrets_by_idp: dict[int, list[str]] = {}
        rows = []
        for entry in page.object_list:
            if entry.idp_id not in secrets_by_idp:
                secrets_by_idp[entry.idp_id] = [v for v in (entry.idp.secrets or {}).values() if isinstance(v, str)]
            rows.append(
                {
                    "entry": entry,
                    "error": censor(entry.last_error, secret_values=secrets_by_idp[entry.idp_id]),
                    "hint": _HINTS.get(entry.last_error.partition(":")[0], ""),
                    "resolvable": entry.operation in (OutboxOperation.DISABLE, OutboxOperation.DELETE),
                }
            )
        context.update(
            page_obj=page,
            rows=rows,
            sync_failed_count=Client.objects.filter(sync_failed=True).count(),
            nav_active="sync_failures",
        )
        return context


# What a person should do, by the error's type (the stored text starts with it).
_HINTS = {
    "AccessDenied": "The IdP refused Registrar's management token and cannot say whether the client still "
    "exists. Check the IdP: delete the client there if it is still present, then mark this "
    "change resolved.",
    "Unconfirmed": "An earlier call may have taken effect at the IdP without Registrar learning its answer, and "
    "the IdP cannot list its clients. Check the IdP for a client carrying this registration id "
    "and delete it there; then Retry (a create) or mark resolved (a delete).",
}


class OutboxRetryView(RoleRequiredMixin, View):
    required_roles = (Role.ADMIN,)
    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        entry = get_object_or_404(OutboxEntry.objects.select_related("client"), pk=pk)
        try:
            entry = outbox_retry(entry=entry, actor=Actor.user(request.user))
        except OutboxError as exc:
            messages.error(request, str(exc))
        else:
            if entry.status == OutboxStatus.SUPERSEDED:
                messages.info(request, f"{entry.client.name}: the client has ended, so its create was dropped.")
            else:
                messages.success(request, f"{entry.operation.title()} for {entry.client.name} queued for delivery.")
        return redirect("inventory:sync_failures")


class OutboxResolveView(RoleRequiredMixin, View):
    required_roles = (Role.ADMIN,)
    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        entry = get_object_or_404(OutboxEntry.objects.select_related("client"), pk=pk)
        try:
            outbox_resolve(entry=entry, actor=Actor.user(request.user), reason=request.POST.get("reason", ""))
        except OutboxError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{entry.get_operation_display()} of {entry.client.name} marked resolved.")
        return redirect("inventory:sync_failures")
