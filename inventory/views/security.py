"""Security pages: the inventory, "explain this client", exports, the sprawl dashboard, the framework report.

Thin views: parse the query string through the shared FilterSet, call a selector, render. Every page
here is read-only; any unsafe method is refused with 403 (security reads everything, changes nothing).
The inventory list and search, the exports, the dashboard and the framework report read the replica when one is
configured (``replica_reads``, portal.dbrouter); "explain this client" and the evidence pack read the primary.
Over 400 lines: one small view per security page, sharing the read-only mixin and the export helpers (the
inventory list's HTML builders live in inventory.views.list_html).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from functools import wraps
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import BadRequest, PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from inventory.filtersets import ClientFilterSet, active_filters
from inventory.lifecycle_policies import active_lifecycle_rules, attestation_due
from inventory.lifecycle_policies.evaluate import compliance_of
from inventory.lifecycle_policies.sponsors import sponsors_of
from inventory.models import Client
from inventory.pagination import keyset_paginate, parse_sort
from inventory.permissions import can_manage_client, can_view_client
from inventory.reports.charts import CHART_TITLES, dashboard_charts
from inventory.reports.controls import PASS, framework_report
from inventory.reports.evidence import evidence_export
from inventory.selectors.dashboard import cached_report, dashboard_data
from inventory.selectors.explain import client_explain
from inventory.selectors.search import clients_visible_to
from inventory.views.list_html import LIST_COLUMNS, form_choices, rows_html, select_options, sort_links
from portal.audit import Actor
from portal.dbrouter import replica_reads
from portal.roles import Role, can_adopt, can_break_glass, can_hold_clients, has_role
from portal.tlog.sequencer import log_status

INVENTORY_ROLES = (Role.SECURITY, Role.ADMIN, Role.OWNER, Role.APPROVER)
OVERSIGHT_ROLES = (Role.SECURITY, Role.ADMIN)
EXPORT_FIELDS = (
    "registration_id",
    "idp_client_id",
    "name",
    "state",
    "risk_tier",
    "idp",
    "owner",
    "team",
    "purpose",
    "scopes",
    "audiences",
    "auth_method",
    "created_via",
    "managed",
    "depth",
    "parent",
    "software_id",
    "spiffe_id",
    "created_at",
    "expires_at",
    "last_used_at",
    "last_used_source",
    "orphaned_at",
    "stale_at",
    "sync_failed",
)


def read_only_page(*roles: str):
    """Signed in + one of ``roles``; GET/HEAD only — any other method is a 403, never a change."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if request.method not in ("GET", "HEAD"):
                raise PermissionDenied("These pages are read-only.")
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not allow this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


# What an untouched filter field submits: dropped before binding, so "any" never fails validation.
BLANK_FILTER_VALUES = ("", "unknown")


def filter_params(request):
    params = request.GET.copy()
    for key in list(params):
        kept = [v for v in params.getlist(key) if v not in BLANK_FILTER_VALUES]
        if kept:
            params.setlist(key, kept)
        else:
            del params[key]
    return params


def _filtered(request, *related: str) -> ClientFilterSet:
    base = clients_visible_to(request.user).select_related("owner", "team", "idp", *related)
    params = filter_params(request)
    return ClientFilterSet(params or None, queryset=base)


# --- inventory ---------------------------------------------------------------------------------


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def inventory_list(request):
    params = filter_params(request)
    filterset = _filtered(request)
    if filterset.is_bound and not filterset.is_valid():
        return render(
            request,
            "inventory/security/list.html",
            {
                "filterset": filterset,
                "page": None,
                "sees_all": has_role(request.user, *OVERSIGHT_ROLES),
                **select_options(filterset.form),
            },
            status=400,
        )
    try:
        page = keyset_paginate(
            filterset.qs,
            sort=params.get("sort"),
            after=params.get("after"),
            before=params.get("before"),
            fields=LIST_COLUMNS,
        )
    except BadRequest as exc:
        return render(
            request,
            "inventory/security/list.html",
            {"filterset": filterset, "page": None, "cursor_error": str(exc), **select_options(filterset.form)},
            status=400,
        )
    query = params.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    base_query = query.urlencode()
    active = active_filters(filterset)
    return render(
        request,
        "inventory/security/list.html",
        {
            "filterset": filterset,
            "page": page,
            "rows_html": rows_html(page.items, list_url=reverse("inventory:list")),
            "active": active,
            "selected_team": active.get("team"),  # the Team the slug named, fetched when the filter validated it
            "sees_all": has_role(request.user, *OVERSIGHT_ROLES),
            "base_query": base_query,
            "next_url": f"?{base_query}&after={page.next_cursor}" if page.next_cursor else None,
            "prev_url": f"?{base_query}&before={page.prev_cursor}" if page.prev_cursor else None,
            "sort_links": sort_links(params, page.sort),
            "nav_active": "inventory",
            **form_choices(params),
            **select_options(filterset.form),
        },
    )


def visible_client_or_404(request, registration_id: str) -> Client:
    client = (
        Client.objects.select_related("owner", "team", "idp", "parent", "hold_by")
        .filter(registration_id=registration_id)
        .first()
    )
    if client is None or not can_view_client(request.user, client):
        raise Http404("No such client.")  # don't reveal clients the user may not see
    return client


@read_only_page(*INVENTORY_ROLES)
def client_explain_page(request, registration_id: str):
    client = visible_client_or_404(request, registration_id)
    explain = client_explain(client)
    rules = active_lifecycle_rules()
    return render(
        request,
        "inventory/security/explain.html",
        {
            "client": client,
            "explain": explain,
            "retire_url": reverse("inventory:client-action", args=[client.registration_id, "retire"])
            if can_manage_client(request.user, client) and explain["is_live"]
            else None,
            "break_glass_url": reverse("inventory:break-glass")
            if can_break_glass(request.user) and explain["is_live"]
            else None,
            "can_contain": can_hold_clients(request.user),
            # Adopting a shadow client: pre-registration's page (approvals' URLconf), prefilled from the IdP's report.
            "adopt_url": reverse("approvals:preregister") + "?" + urlencode({"adopt": client.registration_id})
            if can_adopt(request.user) and not client.managed and explain["is_live"]
            else None,
            "compliance": compliance_of(client, rules),
            "attestation_due": attestation_due(rules, client),
            "lifecycle_rules": rules,
            "sponsors": sponsors_of(client),
            "sponsor_minimum": rules.sponsors.days_for(client.risk_tier) if rules.sponsors.enabled else None,
            "can_manage": can_manage_client(request.user, client),
            "nav_active": "inventory",
        },
    )


@read_only_page(*INVENTORY_ROLES)
def client_evidence(request, registration_id: str):
    # A download, yet not a pure read: exporting is logged (the event that makes the whole pack provable).
    client = visible_client_or_404(request, registration_id)
    response = HttpResponse(
        evidence_export(client=client, actor=Actor.user(request.user)), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="evidence-{client.registration_id}.json"'
    return response


def export_rows(qs) -> Iterator[dict]:
    for c in qs.iterator(chunk_size=2000):
        yield {
            "registration_id": c.registration_id,
            "idp_client_id": c.idp_client_id,
            "name": c.name,
            "state": c.state,
            "risk_tier": c.risk_tier,
            "idp": c.idp.name,
            "owner": c.owner.username if c.owner_id else None,
            "team": c.team.slug if c.team_id else None,
            "purpose": c.purpose,
            "scopes": list(c.scopes),
            "audiences": list(c.audiences),
            "auth_method": c.auth_method,
            "created_via": c.created_via,
            "managed": c.managed,
            "depth": c.depth,
            "parent": c.parent.registration_id if c.parent_id else None,
            "software_id": c.software_id,
            "spiffe_id": c.spiffe_id,
            "created_at": c.created_at,
            "expires_at": c.expires_at,
            "last_used_at": c.last_used_at,
            "last_used_source": c.last_used_source,
            "orphaned_at": c.orphaned_at,
            "stale_at": c.stale_at,
            "sync_failed": c.sync_failed,
        }


class _Echo:
    def write(self, value):
        return value


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value)
    # Spreadsheet formula injection: never start a cell with a formula trigger.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def inventory_export(request, fmt: str):
    filterset = _filtered(request, "parent")
    if filterset.is_bound and not filterset.is_valid():
        return JsonResponse({"errors": filterset.errors}, status=400)
    field, descending = parse_sort(filter_params(request).get("sort"))
    qs = filterset.qs.order_by(f"-{field}" if descending else field, "-pk" if descending else "pk")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        writer = csv.writer(_Echo())

        def lines():
            yield writer.writerow(EXPORT_FIELDS)
            for row in export_rows(qs):
                yield writer.writerow([_csv_cell(row[k]) for k in EXPORT_FIELDS])

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    else:

        def chunks():
            yield '{"generated_at": ' + json.dumps(timezone.now().isoformat()) + ', "filters": '
            yield json.dumps({k: request.GET.getlist(k) for k in request.GET}) + ', "clients": ['
            first = True
            for row in export_rows(qs):
                yield ("" if first else ",\n") + json.dumps(row, cls=DjangoJSONEncoder)
                first = False
            yield "]}\n"

        response = StreamingHttpResponse(chunks(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="registrar-inventory-{stamp}.{fmt}"'
    return response


# --- dashboard ---------------------------------------------------------------------------------


def _dashboard_context():
    data = dashboard_data()  # from the counts: a fixed number of small reads, no snapshot needed
    charts = dashboard_charts(data)
    return data, charts


@read_only_page(*OVERSIGHT_ROLES)
@replica_reads
def dashboard(request):
    data, charts = _dashboard_context()
    chart_list = [
        {
            "id": key,
            "title": CHART_TITLES[key],
            "spec": spec,
            "json_id": f"chart-{key}",
            "rows": list(zip(spec["labels"], *[d["data"] for d in spec["datasets"]], strict=True)),
            "columns": [d["label"] for d in spec["datasets"]],
        }
        for key, spec in charts.items()
    ]
    return render(
        request,
        "inventory/security/dashboard.html",
        {
            "d": data,
            "charts": chart_list,
            "nav_active": "dashboard",
            "log": log_status(),  # live, not snapshotted: a sequencer falling behind shows at once
        },
    )


@read_only_page(*OVERSIGHT_ROLES)
@replica_reads
def dashboard_csv(request, chart: str):
    data, charts = _dashboard_context()
    if chart == "summary":
        rows = [("metric", "value")] + [(k, v) for k, v in _summary_numbers(data).items()]
    elif chart in charts:
        spec = charts[chart]
        rows = [("label", *[d["label"] for d in spec["datasets"]])]
        rows += list(zip(spec["labels"], *[d["data"] for d in spec["datasets"]], strict=True))
    else:
        raise Http404("No such chart.")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="registrar-{chart}.csv"'
    writer = csv.writer(response)
    writer.writerows(rows)
    return response


def _summary_numbers(data) -> dict[str, object]:
    return {
        **data["totals"],
        **{f"live_via_{key}": n for key, _label, n in data.get("by_registration_path", ())},
        "median_time_to_decision_seconds": data["time_to_decision"]["median_seconds"],
        "p90_time_to_decision_seconds": data["time_to_decision"]["p90_seconds"],
        "auto_approval_ratio": data["auto_approval_ratio"],
        "expiry_overshoot_p99_seconds": data["expiry_overshoot_p99"],
        **{f"registrations_{k}": v for k, v in data["registrations"]["totals"].items()},
    }


# --- framework report --------------------------------------------------------------------------


@read_only_page(*OVERSIGHT_ROLES)
@replica_reads
def frameworks_report(request):
    report = cached_report("frameworks", framework_report)
    template = "reports/frameworks_print.html" if request.GET.get("print") else "reports/frameworks.html"
    return render(
        request,
        template,
        {"report": report, "PASS": PASS, "nav_active": "frameworks", "inventory_url": reverse("inventory:list")},
    )


@read_only_page(*OVERSIGHT_ROLES)
@replica_reads
def frameworks_csv(request):
    report = cached_report("frameworks", framework_report)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="registrar-framework-report.csv"'
    writer = csv.writer(response)
    writer.writerow(["framework", "item_id", "item_name", "status", "controls", "evidence_total", "evidence_failing"])
    for fw in report["frameworks"]:
        for item in fw["items"]:
            writer.writerow(
                [
                    fw["title"],
                    item.id,
                    item.name,
                    item.status,
                    "; ".join(r.control.name for r in item.controls),
                    item.evidence_total,
                    item.evidence_failing,
                ]
            )
    writer.writerow([])
    writer.writerow(["control", "status", "population", "failing", "percent_passing", "measurement"])
    for r in report["controls"]:
        writer.writerow([r.control.name, r.status, r.total, r.failing, r.percent, r.sentence])
    return response
