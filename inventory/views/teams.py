"""A team's own dashboard and framework report, read uncached from the counts (``inventory.selectors.counts``),
and the suggestions of the inventory's team picker.

Who sees which team's dashboard is decided in one place, ``portal.roles.can_see_team``: security and admins every
team, an owner the teams they belong to or manage. Read-only pages: any unsafe method is a 403.
"""

from __future__ import annotations

import csv

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from inventory.models import Team
from inventory.reports.charts import CHART_TITLES, dashboard_charts
from inventory.reports.controls import PASS, framework_report
from inventory.selectors.dashboard import dashboard_data
from inventory.selectors.teams import team_suggestions
from inventory.views.security import INVENTORY_ROLES, read_only_page
from portal.dbrouter import replica_reads
from portal.roles import can_see_all_teams, can_see_team
from portal.tlog.sequencer import log_status


def teams_of(user):
    """The teams ``user`` may see a dashboard of, by name."""
    teams = Team.objects.order_by("name")
    if can_see_all_teams(user):
        return teams
    return teams.filter(Q(members=user) | Q(manager=user)).distinct()


def _team_for(request, slug: str) -> Team:
    team = get_object_or_404(Team, slug=slug)
    member = team.manager_id == request.user.pk or team.members.filter(pk=request.user.pk).exists()
    if not can_see_team(request.user, member=member):
        raise PermissionDenied("You may see the dashboards of your own teams only.")
    return team


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def team_picker_options(request):
    """The inventory's team picker: ``<option>``s for its ``<datalist>``, the teams whose name or slug contains
    ``?team=`` (what is typed in the field so far; htmx sends the field under its own name). The same people as
    the inventory's team filter: whoever may open the inventory, which filters by any team's slug."""
    return render(
        request,
        "inventory/security/_team_options.html",
        {"teams": team_suggestions(text=request.GET.get("team", ""))},
    )


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def team_list(request):
    return render(
        request, "inventory/security/team_list.html", {"teams": teams_of(request.user), "nav_active": "dashboard"}
    )


def chart_list(charts: dict) -> list[dict]:
    return [
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


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def team_dashboard(request, slug: str):
    team = _team_for(request, slug)
    data = dashboard_data(team=team)
    return render(
        request,
        "inventory/security/dashboard.html",
        {"d": data, "charts": chart_list(dashboard_charts(data)), "nav_active": "dashboard", "log": log_status()},
    )


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def team_dashboard_csv(request, slug: str, chart: str):
    team = _team_for(request, slug)
    charts = dashboard_charts(dashboard_data(team=team))
    if chart not in charts:
        raise Http404("No such chart.")
    spec = charts[chart]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="registrar-{team.slug}-{chart}.csv"'
    writer = csv.writer(response)
    writer.writerow(("label", *[d["label"] for d in spec["datasets"]]))
    writer.writerows(zip(spec["labels"], *[d["data"] for d in spec["datasets"]], strict=True))
    return response


@read_only_page(*INVENTORY_ROLES)
@replica_reads
def team_frameworks_report(request, slug: str):
    team = _team_for(request, slug)
    return render(
        request,
        "reports/frameworks.html",
        {
            "report": framework_report(team=team),
            "PASS": PASS,
            "nav_active": "frameworks",
            "inventory_url": reverse("inventory:list"),
        },
    )
