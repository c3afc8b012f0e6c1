"""The dashboard's charts: Chart.js specs built from ``inventory.selectors.dashboard.dashboard_data``.

Each spec also serves the table beside the chart and the CSV of its numbers.
"""

from __future__ import annotations

from typing import Any


def chart(kind: str, labels: list, datasets: dict[str, list]) -> dict[str, Any]:
    """The frontend's Chart.js contract: {"type","labels","datasets":[{"label","data"}]}."""
    return {
        "type": kind,
        "labels": [str(label) for label in labels],
        "datasets": [{"label": label, "data": list(data)} for label, data in datasets.items()],
    }


def dashboard_charts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Chart specs keyed by chart id; each also serves the table and the CSV of its numbers."""
    return {
        "live-over-time": chart("line", data["live_series"]["labels"], {"Live clients": data["live_series"]["values"]}),
        "activity": chart(
            "bar",
            data["activity"]["labels"],
            {"Created": data["activity"]["created"], "Ended": data["activity"]["ended"]},
        ),
        "registrations-by-outcome": chart("bar", data["registrations"]["labels"], data["registrations"]["series"]),
        "live-by-tier": chart(
            "doughnut", [t for t, _ in data["by_tier"]], {"Live clients": [n for _, n in data["by_tier"]]}
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
    "live-over-time": "Live clients over time (end of day, last 90 days)",
    "activity": "Clients created and ended per day (last 90 days)",
    "registrations-by-outcome": "Registrations per day by outcome",
    "live-by-tier": "Live clients by risk tier",
    "live-by-idp": "Live clients by IdP",
    "live-by-team": "Live clients by team (top 15)",
    "top-owners": "Top owners by live clients",
    "lineage-depth": "Lineage depth distribution (live clients)",
}
