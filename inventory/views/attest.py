"""``/inventory/mine/attest/``: owners attest their clients, one or many at once (keyboard: Tab through the
checkboxes, Space to tick, the "Attest selected" button has access key A; each row also has its own button)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from inventory.choices import LIVE_STATES
from inventory.lifecycle_policies import active_lifecycle_rules, attestation_due, clients_attest
from inventory.lifecycle_policies.attest import STATEMENT
from inventory.models import Client, ComplianceIssue
from portal.paging import BoundedPaginator

PAGE_SIZE = 100


@login_required
@require_http_methods(["GET", "POST"])
def attest(request):
    if request.method == "POST":
        # A row's own button attests that row only, whatever else is ticked.
        ids = [request.POST["one"]] if request.POST.get("one") else request.POST.getlist("ids")
        if not ids:
            messages.error(request, "Select at least one client to attest.")
            return redirect("inventory:attest")
        result = clients_attest(registration_ids=ids, user=request.user, note=request.POST.get("note", ""))
        if result.attested:
            messages.success(request, f"{len(result.attested)} client(s) attested: {STATEMENT}.")
        for registration_id, why in result.refused.items():
            messages.error(request, f"{registration_id}: {why}")
        return redirect("inventory:attest")
    rules = active_lifecycle_rules()
    now = timezone.now()
    clients = (
        Client.objects.filter(owner=request.user, state__in=LIVE_STATES)
        .select_related("team", "idp", "attested_by")
        .order_by("attested_at", "created_at", "id")
    )
    page = BoundedPaginator(clients, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    issues = {
        issue.client_id: issue
        for issue in ComplianceIssue.objects.filter(client__in=rows, rule="attestation", resolved_at__isnull=True).only(
            "client_id", "since", "action", "action_due_at", "acted_at"
        )
    }
    for client in rows:
        client.attestation_due = attestation_due(rules, client)
        client.attestation_issue = issues.get(client.pk)
        client.attestation_overdue = client.attestation_due is not None and client.attestation_due <= now
    rows.sort(key=lambda c: (c.attestation_due is None, c.attestation_due or now))
    return render(
        request,
        "inventory/owner/attest.html",
        {
            "page_obj": page,
            "clients": rows,
            "now": now,
            "rules": rules,
            "statement": STATEMENT,
            "overdue": sum(c.attestation_overdue for c in rows),
            "nav_active": "my_clients",
        },
    )
