"""The sprawl dashboard's numbers (for everyone or one team), and the snapshot cache reports share.

A fixed number of small queries whatever the inventory size: the live figures come from the counts kept as
clients change (``inventory.selectors.counts``). Registrations per day by outcome
and the time to a human decision are the approvals app's data: it provides them through
``inventory.hooks.registration_stats``. The chart specs built from these numbers are in
``inventory.reports.charts``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from inventory import hooks
from inventory.choices import LIVE_STATES, RiskTier
from inventory.histograms import histogram_percentile
from inventory.models import Client, IdPConnection, Team
from inventory.selectors import counts


def cached_report(key: str, compute, *, refresh: bool = False):
    """Dashboards and reports are snapshots: recompute at most every REGISTRAR_REPORT_CACHE_SECONDS (60 s)
    per key, so a room full of auditors refreshing the page costs one computation a minute.

    Beat keeps the framework report's snapshot warm (``inventory.tasks.refresh_report_snapshots`` with
    ``refresh=True`` twice per period); if beat stops, the first request after expiry computes it inline. The
    dashboards need no snapshot: they read the counts (``inventory.selectors.counts``).
    """
    seconds = settings.REGISTRAR_REPORT_CACHE_SECONDS
    if seconds <= 0:
        return compute()
    full_key = f"registrar:report:{key}"
    value = None if refresh else cache.get(full_key)
    if value is None:
        value = compute()
        cache.set(full_key, value, timeout=seconds)
    return value


DASHBOARD_DAYS = 90


def dashboard_data(
    *, now: datetime | None = None, days: int = DASHBOARD_DAYS, team: Team | None = None
) -> dict[str, Any]:
    """Sprawl numbers, for every client or one ``team``'s. A fixed number of queries whatever the inventory
    size: the live figures, the per-day activity and expiry are read from the counts kept as clients change
    (``inventory.selectors.counts``), never from the client table.

    Live clients per day is derived backwards from today's live count: live(end of day d) =
    live_now − created after d + ended after d.
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    start = timezone.make_aware(datetime.combine(today - timedelta(days=days - 1), datetime.min.time()))
    day_list = [today - timedelta(days=days - 1 - i) for i in range(days)]
    team_id = team.pk if team is not None else None

    breakdown = live_breakdown(now, team_id=team_id)
    totals = breakdown["totals"]
    activity = counts.per_day(since=day_list[0], team_id=team_id)
    created, ended = activity.created, activity.ended
    live_series = []
    running = totals["live"]
    for day in reversed(day_list):
        live_series.append(running)
        running = running - created.get(day, 0) + ended.get(day, 0)
    live_series.reverse()

    by_tier, depth = breakdown["by_tier"], breakdown["depth"]

    stats = hooks.registration_stats(start, team_id)
    outcomes = stats.outcomes
    total_auto = sum(outcomes.get("auto-approved", {}).values())
    total_decided = sum(sum(counts.values()) for counts in outcomes.values())
    overshoot_p99 = _overshoot_p99(team_id)

    return {
        "generated_at": now,
        "days": days,
        "team": team,
        "totals": totals,
        "live_series": {"labels": [d.isoformat() for d in day_list], "values": live_series},
        "activity": {
            "labels": [d.isoformat() for d in day_list],
            "created": [created.get(d, 0) for d in day_list],
            "ended": [ended.get(d, 0) for d in day_list],
        },
        "registrations": {
            "labels": [d.isoformat() for d in day_list],
            "series": {label: [counter.get(d, 0) for d in day_list] for label, counter in outcomes.items()},
            "totals": {label: sum(counter.values()) for label, counter in outcomes.items()},
        },
        "by_tier": [(tier.value, by_tier.get(tier.value, 0)) for tier in RiskTier],
        "by_registration_path": by_registration_path(breakdown["by_created_via"]),
        "by_idp": breakdown["by_idp"],
        "by_team": [(name or "(no team)", n) for name, n in breakdown["by_team"]],
        "top_owners": [(name or "(no owner)", n) for name, n in breakdown["top_owners"]],
        "depth": sorted(depth.items()),
        "time_to_decision": {
            "median_seconds": stats.median_seconds_to_decision,
            "p90_seconds": stats.p90_seconds_to_decision,
        },
        "auto_approval_ratio": (total_auto / total_decided) if total_decided else None,
        "registrations_coalesced": stats.coalesced,
        "expiry_overshoot_p99": overshoot_p99,
    }


# Without the team: for everyone the cube is then read from its all-teams projection (inventory.counts), and the
# clients per team from the (team, state) one.
_CUBE_GROUP = ("risk_tier", "idp_id", "depth", "created_via", "orphaned", "stale", "managed", "sync_failed")


def live_breakdown(now: datetime, *, team_id: int | None = None) -> dict[str, Any]:
    """Live clients by tier, IdP, team, owner, depth and registration path plus the flag totals, from the counts:
    four grouped reads of the rollups or their all-teams projections (one statement each), then names for the
    few ids shown."""
    groups: dict[str, dict] = {
        kind: defaultdict(int) for kind in ("risk_tier", "idp_id", "team_id", "depth", "created_via")
    }
    totals = {"live": 0, "orphaned": 0, "stale": 0, "unmanaged": 0, "sync_failed": 0, "expiring_7d": 0}
    for tid, n in counts.cube(("team_id",), team_id=team_id):
        groups["team_id"][tid] += n
    for tier, idp_id, depth, via, orphaned, stale, managed, sync_failed, n in counts.cube(_CUBE_GROUP, team_id=team_id):
        for kind, key in (
            ("risk_tier", tier),
            ("idp_id", idp_id),
            ("depth", depth),
            ("created_via", via),
        ):
            groups[kind][key] += n
        totals["live"] += n
        totals["orphaned"] += n if orphaned else 0
        totals["stale"] += n if stale else 0
        totals["unmanaged"] += 0 if managed else n
        totals["sync_failed"] += n if sync_failed else 0
    totals["expiring_7d"] = counts.expiring_within(now, timedelta(days=7), counts.expiring(since=now, team_id=team_id))

    def top(kind: str, limit: int) -> list[tuple[Any, int]]:
        return sorted(groups[kind].items(), key=lambda kv: (-kv[1], str(kv[0])))[:limit]

    idps, teams = top("idp_id", 20), top("team_id", 15)
    owners = counts.top_owners(team_id=team_id, limit=10)
    idp_names = dict(IdPConnection.objects.filter(pk__in=[k for k, _ in idps]).values_list("pk", "name"))
    team_names = dict(Team.objects.filter(pk__in=[k for k, _ in teams if k]).values_list("pk", "name"))
    owner_names = dict(
        get_user_model().objects.filter(pk__in=[k for k, _ in owners if k]).values_list("pk", "username")
    )
    return {
        "totals": totals,
        "by_tier": dict(groups["risk_tier"]),
        "depth": dict(groups["depth"]),
        "by_created_via": dict(groups["created_via"]),
        "by_idp": sorted(((idp_names.get(k, str(k)), n) for k, n in idps), key=lambda kv: (-kv[1], kv[0])),
        "by_team": sorted(((team_names.get(k), n) for k, n in teams), key=lambda kv: (-kv[1], kv[0] or "")),
        "top_owners": sorted(((owner_names.get(k), n) for k, n in owners), key=lambda kv: (-kv[1], kv[0] or "")),
    }


_LIVE_BREAKDOWN_SQL = """
SELECT GROUPING(risk_tier, idp_id, team_id, owner_id, depth, created_via) AS g,
       risk_tier, idp_id, team_id, owner_id, depth, created_via,
       count(*) AS n,
       count(*) FILTER (WHERE orphaned_at IS NOT NULL) AS orphaned,
       count(*) FILTER (WHERE stale_at IS NOT NULL) AS stale,
       count(*) FILTER (WHERE NOT managed) AS unmanaged,
       count(*) FILTER (WHERE sync_failed) AS sync_failed,
       count(*) FILTER (WHERE expires_at >= %(now)s AND expires_at < %(week)s) AS expiring_7d
FROM inventory_client
WHERE state IN ('provisioning', 'active', 'suspended')
GROUP BY GROUPING SETS ((), (risk_tier), (idp_id), (team_id), (owner_id), (depth), (created_via))
"""
# GROUPING() bit per column (1 = not grouped), in the order risk_tier, idp_id, team_id, owner_id, depth,
# created_via.
_GROUPED_BY = {
    0b011111: "risk_tier",
    0b101111: "idp_id",
    0b110111: "team_id",
    0b111011: "owner_id",
    0b111101: "depth",
    0b111110: "created_via",
    0b111111: "total",
}
# How live clients came in, as security reads it (docs/cimd.md): how much of the estate still depends on
# dynamic registration, which the MCP authorization spec deprecates.
REGISTRATION_PATHS = {
    "token": "dcr",
    "software_statement": "dcr",
    "spawn": "dcr",
    "cimd": "cimd",
    "pre_registration": "pre_registered",
    "admin": "pre_registered",
    "discovered": "discovered",
    "anonymous": "anonymous",
}
REGISTRATION_PATH_LABELS = {
    "dcr": "Dynamic registration (RFC 7591, deprecated by MCP)",
    "anonymous": "Anonymous/MCP (DCR without a token)",
    "cimd": "Client ID Metadata Document",
    "pre_registered": "Pre-registered",
    "discovered": "Discovered at the IdP",
}


def by_registration_path(by_created_via: dict[str, int]) -> list[tuple[str, str, int]]:
    """Live clients per registration path: (key, label, count), every path listed, in a fixed order."""
    counts = dict.fromkeys(REGISTRATION_PATH_LABELS, 0)
    for via, n in by_created_via.items():
        counts[REGISTRATION_PATHS.get(via, "pre_registered")] += n
    return [(key, REGISTRATION_PATH_LABELS[key], counts[key]) for key in REGISTRATION_PATH_LABELS]


def live_breakdown_raw(now: datetime) -> dict[str, Any]:
    """The same numbers from the client table itself: ONE scan (GROUPING SETS), then names for the few ids shown.
    Linear in the number of live clients: what the counts replaced, kept as the benchmark's and the tests'
    reference."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_BREAKDOWN_SQL, {"now": now, "week": now + timedelta(days=7)})
        rows = cursor.fetchall()
    groups: dict[str, dict] = defaultdict(dict)
    totals = {"live": 0, "orphaned": 0, "stale": 0, "unmanaged": 0, "sync_failed": 0, "expiring_7d": 0}
    for g, tier, idp_id, team_id, owner_id, depth, via, n, orphaned, stale, unmanaged, sync_failed, expiring in rows:
        kind = _GROUPED_BY[g]
        if kind == "total":
            totals = {
                "live": n,
                "orphaned": orphaned,
                "stale": stale,
                "unmanaged": unmanaged,
                "sync_failed": sync_failed,
                "expiring_7d": expiring,
            }
        else:
            key = {
                "risk_tier": tier,
                "idp_id": idp_id,
                "team_id": team_id,
                "owner_id": owner_id,
                "depth": depth,
                "created_via": via,
            }[kind]
            groups[kind][key] = n

    def top(kind: str, limit: int) -> list[tuple[Any, int]]:
        return sorted(groups[kind].items(), key=lambda kv: (-kv[1], str(kv[0])))[:limit]

    idps, teams, owners = top("idp_id", 20), top("team_id", 15), top("owner_id", 10)
    idp_names = dict(IdPConnection.objects.filter(pk__in=[k for k, _ in idps]).values_list("pk", "name"))
    team_names = dict(Team.objects.filter(pk__in=[k for k, _ in teams if k]).values_list("pk", "name"))
    owner_names = dict(
        get_user_model().objects.filter(pk__in=[k for k, _ in owners if k]).values_list("pk", "username")
    )
    return {
        "totals": totals,
        "by_tier": groups["risk_tier"],
        "depth": groups["depth"],
        "by_created_via": groups["created_via"],
        "by_idp": sorted(((idp_names.get(k, str(k)), n) for k, n in idps), key=lambda kv: (-kv[1], kv[0])),
        "by_team": sorted(((team_names.get(k), n) for k, n in teams), key=lambda kv: (-kv[1], kv[0] or "")),
        "top_owners": sorted(((owner_names.get(k), n) for k, n in owners), key=lambda kv: (-kv[1], kv[0] or "")),
    }


def _live_breakdown_orm(now: datetime) -> dict[str, Any]:
    """The same numbers with portable ORM queries (SQLite has no GROUPING SETS)."""
    live = Client.objects.filter(state__in=LIVE_STATES)
    totals = live.aggregate(
        live=Count("pk"),
        orphaned=Count("pk", filter=Q(orphaned_at__isnull=False)),
        stale=Count("pk", filter=Q(stale_at__isnull=False)),
        unmanaged=Count("pk", filter=Q(managed=False)),
        sync_failed=Count("pk", filter=Q(sync_failed=True)),
        expiring_7d=Count("pk", filter=Q(expires_at__gte=now, expires_at__lt=now + timedelta(days=7))),
    )
    return {
        "totals": totals,
        "by_tier": dict(live.values("risk_tier").annotate(n=Count("pk")).values_list("risk_tier", "n")),
        "depth": dict(live.values("depth").annotate(n=Count("pk")).order_by("depth").values_list("depth", "n")),
        "by_created_via": dict(
            live.values("created_via").annotate(n=Count("pk")).order_by("created_via").values_list("created_via", "n")
        ),
        "by_idp": [
            (r["idp__name"], r["n"])
            for r in live.values("idp__name").annotate(n=Count("pk")).order_by("-n", "idp__name")[:20]
        ],
        "by_team": [
            (r["team__name"], r["n"])
            for r in live.values("team__name").annotate(n=Count("pk")).order_by("-n", "team__name")[:15]
        ],
        "top_owners": [
            (r["owner__username"], r["n"])
            for r in live.values("owner__username").annotate(n=Count("pk")).order_by("-n", "owner__username")[:10]
        ],
    }


def as_date(value):
    return value.date() if isinstance(value, datetime) else value


def _by_date(mapping: dict) -> dict:
    out: dict = defaultdict(int)
    for key, n in mapping.items():
        out[as_date(key)] += n
    return out


def _overshoot_p99(team_id: int | None = None) -> float | None:
    """p99 of the expiry overshoot (expires_at → disabled at the IdP) from the overshoot histogram kept as
    clients expire: within one bucket (``inventory.histograms.RELATIVE_WIDTH``) of the exact value."""
    return histogram_percentile(counts.overshoot_histogram(team_id=team_id), 0.99)
