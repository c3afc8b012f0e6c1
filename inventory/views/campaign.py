"""``/reports/attestation/``: the attestation campaign's progress per team and owner (security, admin); CSV."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render

from inventory.reports.attestation import DUE_SOON_DAYS, attestation_campaign
from inventory.views.security import OVERSIGHT_ROLES, read_only_page
from portal.dbrouter import replica_reads


@read_only_page(*OVERSIGHT_ROLES)
@replica_reads
def attestation_report(request):
    campaign = attestation_campaign()
    if request.GET.get("format") == "csv":
        response = HttpResponse(campaign.csv(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="attestation-campaign.csv"'
        return response
    return render(
        request,
        "inventory/security/attestation_report.html",
        {"campaign": campaign, "due_soon_days": DUE_SOON_DAYS, "nav_active": "frameworks"},
    )
