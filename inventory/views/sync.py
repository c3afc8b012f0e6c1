"""Sync failures: outbox entries that could not be delivered to an IdP (admins).

Each row has Retry; a dead disable or delete also has "Mark resolved" with a reason, for what only a person
can settle at the IdP (a refused management token, a client whose id Registrar never learnt).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views import View
from django.views.generic import TemplateView

from inventory.choices import OutboxStatus
from inventory.models import Client, OutboxEntry
from inventory.outbox import OutboxError, outbox_resolve, outbox_retry
from inventory.selectors.sync import dead_letters, sync_failure_rows
from portal.audit import Actor
from portal.paging import BoundedPaginator, bounded_count, count_label
from portal.roles import Role, RoleRequiredMixin

PAGE_SIZE = 50


class SyncFailuresView(RoleRequiredMixin, TemplateView):
    required_roles = (Role.ADMIN,)
    template_name = "inventory/sync_failures.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        page = BoundedPaginator(dead_letters(), PAGE_SIZE).get_page(self.request.GET.get("page"))
        rows = [
            {"entry": row.entry, "error": row.error, "hint": row.hint, "resolvable": row.resolvable}
            for row in sync_failure_rows(page.object_list)
        ]
        context.update(
            page_obj=page,
            rows=rows,
            sync_failed_count=count_label(bounded_count(Client.objects.filter(sync_failed=True))),
            nav_active="sync_failures",
        )
        return context


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
