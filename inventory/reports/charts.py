"""The dashboard's charts: Chart.js specs built from ``inventory.selectors.dashboard.dashboard_data``.

Each spec also serves the table beside the chart and the CSV of its numbers. Colours that carry a meaning are
set here, not left to the frontend's palette order: risk is green/amber/red, approvals green, denials and
refusals red. Time charts keep every day of the window in their data (table, CSV) but open on the recent part
that has activity (``xMin``), so a few days of registrations are not a hairline at the end of a 90-day axis.
"""

from __future__ import annotations

from typing import Any

# Fill colours with a meaning; the hues of static/css/app.css's --ok / --warn / --danger.
OK, OK_LIGHT, WARN, DANGER, DANGER_DARK = "#2e8540", "#7cc48b", "#d08700", "#b42318", "#6b1610"
TIER_COLOURS = {"low": OK, "medium": WARN, "high": DANGER}
OUTCOME_COLOURS = {"auto-approved": OK_LIGHT, "human-approved": OK, "denied": DANGER, "refused": DANGER_DARK}
# A time chart opens on at least this many days, and earlier only as far back as the first activity.
MIN_VISIBLE_DAYS = 14


def chart(kind: str, labels: list, datasets: dict[str, list], colours: dict[str, str] | None = None) -> dict[str, Any]:
    """The frontend's Chart.js contract: {"type","labels","datasets":[{"label","data"}]}, plus an explicit
    ``backgroundColor``/``borderColor`` where ``colours`` names one (per dataset label; for a doughnut, per
    slice label)."""
    spec: dict[str, Any] = {
        "type": kind,
        "labels": [str(label) for label in labels],
        "datasets": [{"label": label, "data": list(data)} for label, data in datasets.items()],
    }
    if colours:
        for ds in spec["datasets"]:
            if kind == "doughnut":
                ds["backgroundColor"] = [colours.get(label, "#57606a") for label in spec["labels"]]
            elif ds["label"] in colours:
                ds["backgroundColor"] = ds["borderColor"] = colours[ds["label"]]
    return spec


def first_active_index(live: list[int], registrations: list[list[int]], *, minimum: int = MIN_VISIBLE_DAYS) -> int:
    """Index of the first day worth showing: the earliest day with a registration or a change in the live count,
    but never fewer than ``minimum`` days before the end."""
    n = len(live)
    latest_start = max(n - minimum, 0)
    registered = (i for i in range(n) if any(series[i] for series in registrations))
    changed = (i - 1 for i in range(1, n) if live[i] != live[i - 1])  # from the day before, to show the step
    return min(next(registered, latest_start), next(changed, latest_start), latest_start)


def dashboard_charts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Chart specs keyed by chart id; each also serves the table and the CSV of its numbers."""
    live_labels, live_values = data["live_series"]["labels"], data["live_series"]["values"]
    registrations, activity = data["registrations"], data["activity"]
    over_time = {
        "live-over-time": chart("line", live_labels, {"Live clients": live_values}),
        "activity": chart("bar", activity["labels"], {"Created": activity["created"], "Ended": activity["ended"]}),
        "registrations-by-outcome": chart("bar", registrations["labels"], registrations["series"], OUTCOME_COLOURS)
        | {"stacked": True},
    }
    if live_labels:  # each chart opens on its own activity: new registrations today are not squeezed by a
        # client created weeks ago, nor the live count's steps by the registrations
        flat = [0] * len(live_values)
        starts = {
            "live-over-time": first_active_index(live_values, []),
            "activity": first_active_index([0] * len(activity["labels"]), [activity["created"], activity["ended"]]),
            "registrations-by-outcome": first_active_index(flat, list(registrations["series"].values())),
        }
        for key, start in starts.items():
            if over_time[key]["labels"]:
                over_time[key]["xMin"] = over_time[key]["labels"][start]
    return over_time | {
        "live-by-tier": chart(
            "doughnut",
            [t for t, _ in data["by_tier"]],
            {"Live clients": [n for _, n in data["by_tier"]]},
            TIER_COLOURS,
        ),
        "live-by-idp": chart("bar", [i for i, _ in data["by_idp"]], {"Live clients": [n for _, n in data["by_idp"]]}),
        "live-by-team": chart(
            "bar", [t for t, _ in data["by_team"]], {"Live clients": [n for _, n in data["by_team"]]}
        ),
        "top-owners": chart(
            "bar", [o for o, _ in data["top_owners"]], {"Live clients": [n for _, n in data["top_owners"]]}
        ),
        "lineage-depth": chart(
            "bar", [str(d) for d, _ in data["depth"]], {"Live clients": [n for _, n in data["depth"]]}
        ),
    }


CHART_TITLES = {
    "live-over-time": "Live clients over time (end of day)",
    "activity": "Clients created and ended per day",
    "registrations-by-outcome": "Registrations per day by outcome",
    "live-by-tier": "Live clients by risk tier",
    "live-by-idp": "Live clients by IdP",
    "live-by-team": "Live clients by team (top 15)",
    "top-owners": "Top owners by live clients",
    "lineage-depth": "Lineage depth distribution (live clients)",
}
