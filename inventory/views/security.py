"""Security pages: the inventory, "explain this client", exports, the sprawl dashboard, the framework report.

Thin views: parse the query string through the shared FilterSet, call a selector, render. Every page
here is read-only; any unsafe method is refused with 403 (security reads everything, changes nothing).
The inventory list and search, the exports, the dashboard and the framework report read the replica when one is
configured (``replica_reads``, portal.dbrouter); "explain this client" and the evidence pack read the primary.
Slightly over 400 lines: one small view per security page, sharing the read-only mixin and the export helpers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from functools import wraps
from html import escape
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import BadRequest, PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from inventory.choices import ClientState, RiskTier
from inventory.filtersets import ClientFilterSet, active_filters
from inventory.lifecycle_policies import active_lifecycle_rules, attestation_due
from inventory.lifecycle_policies.evaluate import compliance_of
from inventory.lifecycle_policies.sponsors import sponsors_of
from inventory.models import Client, IdPConnection
from inventory.pagination import keyset_paginate, parse_sort
from inventory.permissions import can_manage_client, can_view_client
from inventory.reports.charts import CHART_TITLES, dashboard_charts
from inventory.reports.controls import PASS, framework_report
from inventory.reports.evidence import evidence_export
from inventory.selectors.dashboard import cached_report, dashboard_data
from inventory.selectors.explain import client_explain
from inventory.selectors.search import clients_visible_to
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
                **_select_options(filterset.form),
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
            {"filterset": filterset, "page": None, "cursor_error": str(exc), **_select_options(filterset.form)},
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
            "sort_links": _sort_links(params, page.sort),
            "nav_active": "inventory",
            **_form_choices(params),
            **_select_options(filterset.form),
        },
    )


# One row of the inventory's table, built in Python: 50 rows through the template engine were ~1,200 variable
# lookups and escapes, and format_html per row (a lazy-aware conditional_escape per value) still ~3 ms a page.
# Every value is escaped with ``html.escape`` (what ``django.utils.html.escape`` does, without its lazy wrapper).
_ROW = (
    '<tr data-row data-href="{url}">\n'
    '  <td><a href="{url}">{name}</a>{badges}</td>\n'
    '  <td class="small"><code>{idp_client_id}</code></td>\n'
    '  <td><span class="state-{state}">{state_label}</span></td>\n'
    '  <td><span class="badge-{risk_tier}">{tier_label}</span></td>\n'
    '  <td>{owner}{inactive}<br><span class="muted small">{team}</span></td>\n'
    '  <td class="small">{idp}</td>\n'
    '  <td class="small">{purpose}</td>\n'
    '  <td class="small">{expires}</td>\n'
    '  <td class="small">{last_used}</td>\n'
    '  <td class="num">{depth}</td>\n'
    '  <td class="nowrap small"><time datetime="{created_iso}">{created}</time></td>\n'
    "</tr>\n"
)
_INACTIVE = ' <span class="badge-high">inactive</span>'
# The values rows_html reads (every sort column among them, for the page's cursors): the page's rows are named
# tuples of these (keyset_paginate's ``fields``), not clients with their owner, team and IdP built as models.
# Usernames and team names are never NULL, so a NULL one means the client has no owner or no team.
LIST_COLUMNS = (
    "registration_id",
    "name",
    "managed",
    "orphaned_at",
    "stale_at",
    "sync_failed",
    "idp_client_id",
    "state",
    "risk_tier",
    "owner__username",
    "owner__is_active",
    "team__name",
    "idp__name",
    "purpose",
    "expires_at",
    "last_used_at",
    "last_used_source",
    "depth",
    "created_at",
)


def _purpose(text: str) -> str:
    """What ``|truncatechars:80`` showed; a short ASCII purpose (the common case) is returned as it is."""
    if len(text) <= 80 and text.isascii():
        return text
    return Truncator(text).chars(80)


def rows_html(rows, *, list_url: str) -> SafeString:
    """The table body for ``rows`` (named tuples of ``LIST_COLUMNS``), every value escaped."""
    # the choices' labels once per page (get_FOO_display hashes the value and translates the label per call)
    states = {value: escape(str(label)) for value, label in ClientState.choices}
    tiers = {value: escape(str(label)) for value, label in RiskTier.choices}
    tz = timezone.get_current_timezone()  # what timezone.localtime() looks up per value
    html = []
    for c in rows:
        owner, team, state, tier = c.owner__username, c.team__name, escape(c.state), escape(c.risk_tier)
        url = escape(f"{list_url}{c.registration_id}/")
        badges = ""
        if not c.managed:
            badges += ' <span class="badge-neutral">shadow</span>'
        if c.orphaned_at is not None:
            badges += ' <span class="badge-high">orphaned</span>'
        if c.stale_at is not None:
            badges += ' <span class="badge-medium">stale</span>'
        if c.sync_failed:
            badges += ' <span class="badge-high">sync failed</span>'
        created = _iso(c.created_at, tz)
        html.append(
            _ROW.format(
                url=url,
                name=escape(c.name),
                badges=badges,
                idp_client_id=escape(c.idp_client_id or "—"),
                state=state,
                state_label=states.get(c.state, state),
                risk_tier=tier,
                tier_label=tiers.get(c.risk_tier, tier),
                owner=escape(owner) if owner is not None else "(no owner)",
                inactive=_INACTIVE if owner is not None and not c.owner__is_active else "",
                team=escape(team) if team is not None else "",
                idp=escape(c.idp__name),
                purpose=escape(_purpose(c.purpose)) or "—",
                expires=_time(_iso(c.expires_at, tz)),
                last_used=_time(_iso(c.last_used_at, tz), title=f"reported by {c.last_used_source or 'unknown'}"),
                depth=c.depth,
                created_iso=created,
                created=_shown(created, time=False) if created else "",
            )
        )
    return mark_safe("".join(html))  # noqa: S308 - every value above is escaped


def _iso(value, tz) -> str:
    """portal.templatetags.registrar_dates' iso_datetime, with the time zone looked up once per page: ISO 8601
    (digits, "-", ":", "T", "." and "+" only, nothing to escape), or "" for no date."""
    if not isinstance(value, datetime):
        return ""
    return (value.astimezone(tz) if value.utcoffset() is not None else value).isoformat()


def _time(iso: str, title: str = "") -> str:
    """A ``<time>`` for an ISO date-time (registrar_dates' short_datetime as its text), "never" for none."""
    if not iso:
        return "never"
    text = _shown(iso, time=True)
    if title:
        return f'<time datetime="{iso}" title="{escape(title)}">{text}</time>'
    return f'<time datetime="{iso}">{text}</time>'


def _shown(iso: str, *, time: bool) -> str:
    """registrar_dates' short_datetime ("%Y-%m-%d %H:%M") or short_date ("%Y-%m-%d"), cut from the ISO text."""
    if iso[:1] == "0":  # a year before 1000: strftime's %Y is not zero-padded, isoformat's is
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M" if time else "%Y-%m-%d")
    return f"{iso[:10]} {iso[11:16]}" if time else iso[:10]


FLAG_FILTERS = (
    ("orphaned", "Orphaned"),
    ("stale", "Stale"),
    ("unmanaged", "Unmanaged"),
    ("sync_failed", "Sync failed"),
)


def _form_choices(params) -> dict:
    """Options for the filter form, rendered as plain loops (Django's widget templates cost ~20 ms here).

    No team options: the teams grow with the organisation, so the team field is a text input whose suggestions
    come from ``inventory:team-options`` as the user types (inventory.views.teams.team_picker_options)."""
    return {
        "list_url": reverse("inventory:list"),
        "idp_choices": list(IdPConnection.objects.order_by("name").values_list("name", flat=True)),
        "flag_fields": [{"name": n, "label": label, "value": params.get(n, "")} for n, label in FLAG_FILTERS],
    }


# The filter form's selects whose options come from the FilterSet's fields: "state" -> "state_options", ...
SELECTS = {"state": "multiple", "tier": "multiple", "created_via": "multiple", "failing": "single", "sort": "single"}


def _select_options(form) -> dict[str, SafeString]:
    """Each select's ``<option>``s, the submitted ones selected, as one escaped string per select.

    What the template's loops rendered (``{% for value, label in f.fields.state.choices %}`` with
    ``{% if value in f.state.value %}``): 40 options each asking the bound field for its value were ~1 ms a page.
    "failing" leaves out its empty choice (the template writes its own "—" option); "sort" keeps it."""
    options = {}
    for name, kind in SELECTS.items():
        current = form[name].value()
        if kind == "multiple":
            chosen = current if isinstance(current, list | tuple) else ()
        else:
            chosen = (current,)
        html = []
        for value, label in form.fields[name].choices:
            if name == "failing" and not value:
                continue
            selected = " selected" if value in chosen else ""
            html.append(f'<option value="{escape(str(value))}"{selected}>{escape(str(label))}</option>')
        options[f"{name}_options"] = mark_safe("".join(html))  # noqa: S308 - values and labels escaped
    return options


def _sort_links(params, current: str) -> dict[str, dict[str, str]]:
    """For each sortable column: the URL that sorts by it (toggling direction) and the aria-sort value."""
    query = params.copy()
    for drop in ("after", "before", "sort"):
        query.pop(drop, None)
    prefix = "?" + query.urlencode()  # the filters, then the column's sort last (as QueryDict appends it)
    if len(prefix) > 1:
        prefix += "&"
    links = {}
    for key in ("name", "state", "tier", "created", "expires", "depth"):
        if current == key:
            sort, aria = f"-{key}", "ascending"
        elif current == f"-{key}":
            sort, aria = key, "descending"
        else:
            sort, aria = key, "none"
        links[key] = {"url": prefix + urlencode({"sort": sort}), "aria": aria}
    return links


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
