"""Reads of the client counts (``inventory.counts``): the folded rollups plus the deltas not yet folded.

Each read is ONE statement — ``SELECT keys, SUM(n) FROM (<rollup rows> UNION ALL <deltas>) GROUP BY keys`` — so
it sees one snapshot: a fold committing meanwhile moves rows from one side to the other and never counts them
twice or not at all. The rollups hold one row per combination of counted values (teams × states × tiers …),
not per client, and the deltas only what arrived since the last fold (seconds), so the cost of a read does not
grow with the number of clients. A read for every team takes the all-teams projection of its rollup (rows per
state × tier × …, not per team × owner as well); a read of one team, its team's rows of the rollup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import BooleanField, ExpressionWrapper, F, IntegerField, Q, QuerySet, Sum, Value
from django.db.models.functions import TruncDate, TruncHour, TruncWeek

from inventory.choices import LIVE_STATES, ClientState
from inventory.counts import CUBE_BOOLEANS, ORPHAN_COUNTED_STATES, hour_of, normal_key
from inventory.histograms import seconds_bucket
from inventory.models import (
    ClientAttestCount,
    ClientAttestDayCount,
    ClientCount,
    ClientCountAllTeams,
    ClientCountDelta,
    ClientDayCount,
    ClientDayCountAllTeams,
    ClientExpiryCount,
    ClientExpiryCountAllTeams,
    ClientOrphanCount,
    ClientOrphanCountAllTeams,
    ClientOvershootCount,
    ClientOvershootCountAllTeams,
    ClientOwnerCount,
    ClientOwnerLiveCount,
    ClientTeamCount,
)
from portal.dbrouter import read_connection

# How a delta row maps onto each rollup's key columns.
_DELTA_CUBE: dict[str, Any] = {
    "no_expiry": ExpressionWrapper(Q(expires_at__isnull=True), output_field=BooleanField()),
}
_DELTA_EXPIRY: dict[str, Any] = {"expires_hour": TruncHour("expires_at", tzinfo=UTC)}


def _member(queryset: QuerySet, columns: Mapping[str, Any], n: Any) -> tuple[str, tuple]:
    """One SELECT of the union: ``columns`` (name → field name or expression) and the count, as g0, g1, … gn."""
    annotations = {f"g{i}": (F(v) if isinstance(v, str) else v) for i, v in enumerate(columns.values())}
    annotations["gn"] = F(n) if isinstance(n, str) else n
    sql, params = queryset.order_by().annotate(**annotations).values_list(*annotations).query.sql_with_params()
    return sql, tuple(params)


def union_sum(
    members: list[tuple[QuerySet, Mapping[str, Any], Any]],
    *,
    width: int,
    top: int | None = None,
) -> list[tuple]:
    """SUM of the members' counts grouped by their ``width`` key columns, zero sums left out; with ``top``, the
    ``top`` largest (ties by key)."""
    parts = [_member(qs, columns, n) for qs, columns, n in members]
    keys = ", ".join(f"g{i}" for i in range(width))
    sql = (
        f"SELECT {keys}, SUM(gn) FROM ({' UNION ALL '.join(s for s, _ in parts)}) AS u "  # noqa: S608 - compiled
        f"GROUP BY {keys} HAVING SUM(gn) <> 0"
    )
    if top is not None:
        sql += f" ORDER BY SUM(gn) DESC, {keys} LIMIT {int(top)}"
    with read_connection().cursor() as cursor:  # the replica inside a read scope (portal.dbrouter)
        cursor.execute(sql, [p for _, params in parts for p in params])
        return cursor.fetchall()


def histogram(
    rollup: QuerySet, deltas: QuerySet, delta_columns: tuple[str, ...], seconds: Callable[..., float | None]
) -> Counter:
    """bucket → count of a histogram rollup (rows with ``bucket`` and ``n``) plus its unfolded ``deltas``, in ONE
    statement: the rollup summed per bucket, UNION ALL each delta's ``n`` and raw ``delta_columns``, which
    ``seconds(*values)`` turns into a duration here (``inventory.histograms`` defines the buckets in Python, not
    in SQL; the deltas are the few seconds' worth not folded yet). ``seconds`` returning None leaves a delta out."""
    fields = [deltas.model._meta.get_field(name) for name in delta_columns]
    placeholders = {f"v{i}": Value(None, output_field=field) for i, field in enumerate(fields)}
    folded = rollup.order_by().values("bucket").annotate(gn=Sum("n")).annotate(**placeholders)
    unfolded = deltas.order_by().annotate(
        gb=Value(None, output_field=IntegerField()), gn=F("n"), **{f"v{i}": F(c) for i, c in enumerate(delta_columns)}
    )
    names = [f"v{i}" for i in range(len(fields))]
    folded_sql, folded_params = folded.values_list("bucket", "gn", *names).query.sql_with_params()
    unfolded_sql, unfolded_params = unfolded.values_list("gb", "gn", *names).query.sql_with_params()
    out: Counter = Counter()
    with read_connection().cursor() as cursor:  # the replica inside a read scope (portal.dbrouter)
        cursor.execute(f"{folded_sql} UNION ALL {unfolded_sql}", [*folded_params, *unfolded_params])
        for bucket, n, *values in cursor.fetchall():
            if bucket is not None:
                out[int(bucket)] += int(n)
                continue
            duration = seconds(*values)
            if duration is not None:
                out[seconds_bucket(duration)] += int(n)
    return Counter({b: n for b, n in out.items() if n})


# The cube's tables, smallest first: a read takes the first that holds every column it groups or filters by.
_CUBES = (ClientTeamCount, ClientCountAllTeams, ClientCount)


def _columns(model) -> set[str]:
    return {f.attname for f in model._meta.concrete_fields} - {"id", "n"}


def smallest_table(candidates, needed: set[str]):
    """The first of ``candidates`` (models, smallest first) whose columns include ``needed``."""
    for model in candidates:
        if needed <= _columns(model):
            return model
    raise ValueError(f"no table counts by {sorted(needed)}")


def rollup_rows(candidates, needed: set[str], *, team_id: int | None = None) -> QuerySet:
    """The rows to read of a rollup or its projections (``candidates``, smallest first): the first table that
    holds the ``needed`` columns — and the team's, for one team (then only that team's rows). The one place a read
    chooses between a rollup and its all-teams projection (``inventory.counts.Projection``)."""
    table = smallest_table(candidates, {*needed, *(("team_id",) if team_id is not None else ())})
    rows = table._default_manager.all()
    return rows if team_id is None else rows.filter(team_id=team_id)


def overshoot_histogram(*, team_id: int | None = None) -> Counter:
    """Clients whose expiry overshoot is recorded, per overshoot bucket (``inventory.histograms``)."""
    team = Q() if team_id is None else Q(team_id=team_id)
    return histogram(
        rollup_rows((ClientOvershootCountAllTeams, ClientOvershootCount), {"bucket"}, team_id=team_id),
        ClientCountDelta.objects.filter(team, expiry_overshoot_seconds__isnull=False),
        ("expiry_overshoot_seconds",),
        float,
    )


def _scope(team_id: int | None, states) -> Q:
    q = Q(state__in=list(states))
    if team_id is not None:
        q &= Q(team_id=team_id)
    return q


def cube(group: tuple[str, ...], *, team_id: int | None = None, states=LIVE_STATES) -> list[tuple]:
    """Clients (live by default) per ``group`` (columns of ``ClientCount``), e.g. ``("risk_tier",)``: from the
    all-teams projection unless the read is of one team or by team (``inventory.counts.PROJECTIONS``)."""
    scope = _scope(team_id, states)
    columns = {name: name for name in group}
    delta_columns = {name: _DELTA_CUBE.get(name, name) for name in group}
    rows = union_sum(
        [
            (rollup_rows(_CUBES, {*group, "state"}, team_id=team_id).filter(state__in=list(states)), columns, "n"),
            (ClientCountDelta.objects.filter(scope), delta_columns, "n"),
        ],
        width=len(group),
    )
    return [
        (*(bool(v) if name in CUBE_BOOLEANS else v for name, v in zip(group, row[:-1], strict=True)), int(row[-1]))
        for row in rows
    ]


def live_totals(*, team_id: int | None = None) -> dict[str, int]:
    """Live clients and how many are orphaned, unmanaged (shadow) or failing to sync: one read of the cube."""
    totals = {"live_clients": 0, "orphaned": 0, "unmanaged": 0, "sync_failed": 0}
    for orphaned, managed, sync_failed, n in cube(("orphaned", "managed", "sync_failed"), team_id=team_id):
        totals["live_clients"] += n
        totals["orphaned"] += n if orphaned else 0
        totals["unmanaged"] += 0 if managed else n
        totals["sync_failed"] += n if sync_failed else 0
    return totals


def _owner_rollup(team_id: int | None, states) -> QuerySet:
    """Live clients of every team per owner from the projection (one row per owner); else the owner rollup."""
    if team_id is None and frozenset(states) == LIVE_STATES:
        return ClientOwnerLiveCount.objects.all()
    return ClientOwnerCount.objects.filter(_scope(team_id, states))


# The top owners of every team without summing every owner: only the owners with unfolded deltas can have moved,
# so the top ``limit`` are among the folded top ``limit + d`` (d = owners with deltas; at least ``limit`` owners
# without deltas stay above any owner below those) and the owners with deltas. Read in one statement (one
# snapshot), from the index on (n DESC, owner_id): its cost follows the deltas, not the number of owners.
_TOP_LIVE_OWNERS_SQL = """
WITH d AS (
    SELECT owner_id, SUM(n) AS n FROM inventory_clientcountdelta WHERE state IN ({states}) GROUP BY owner_id
), candidates AS (
    SELECT owner_id FROM (
        SELECT owner_id FROM inventory_clientownerlivecount ORDER BY n DESC, owner_id
        LIMIT %s + (SELECT COUNT(*) FROM d)
    ) AS folded
    UNION SELECT owner_id FROM d
)
SELECT c.owner_id, COALESCE(o.n, 0) + COALESCE(d.n, 0) AS total
FROM candidates c
LEFT JOIN inventory_clientownerlivecount o ON o.owner_id = c.owner_id
LEFT JOIN d ON d.owner_id = c.owner_id
WHERE COALESCE(o.n, 0) + COALESCE(d.n, 0) <> 0
ORDER BY total DESC, c.owner_id
LIMIT %s
"""


def top_owners(*, team_id: int | None = None, states=LIVE_STATES, limit: int = 10) -> list[tuple[int, int]]:
    """(owner id, clients) of the ``limit`` owners with most clients; owner 0 is "no owner"; ties by owner id."""
    if team_id is None and frozenset(states) == LIVE_STATES:
        live = sorted(LIVE_STATES)
        sql = _TOP_LIVE_OWNERS_SQL.format(states=", ".join(["%s"] * len(live)))
        with read_connection().cursor() as cursor:  # the replica inside a read scope (portal.dbrouter)
            cursor.execute(sql, [*live, int(limit), int(limit)])
            return [(owner_id, int(n)) for owner_id, n in cursor.fetchall()]
    scope = _scope(team_id, states)
    rows = union_sum(
        [
            (_owner_rollup(team_id, states), {"owner_id": "owner_id"}, "n"),
            (ClientCountDelta.objects.filter(scope), {"owner_id": "owner_id"}, "n"),
        ],
        width=1,
        top=limit,
    )
    return [(owner_id, int(n)) for owner_id, n in rows]


def owners_total(owner_ids: list[int] | QuerySet, *, team_id: int | None = None, states=LIVE_STATES) -> int:
    """Clients (live by default) owned by any of ``owner_ids`` (0 = no owner; or a subquery of user ids)."""
    scope = _scope(team_id, states) & Q(owner_id__in=owner_ids)
    rows = union_sum(
        [
            (_owner_rollup(team_id, states).filter(owner_id__in=owner_ids), {"k": Value(1)}, "n"),
            (ClientCountDelta.objects.filter(scope), {"k": Value(1)}, "n"),
        ],
        width=1,
    )
    return int(rows[0][1]) if rows else 0


def expiring(*, since: datetime, team_id: int | None = None, states=LIVE_STATES) -> list[tuple[str, datetime, int]]:
    """(risk tier, hour, clients) of clients (live by default) expiring in the hour starting at ``since`` or
    later, counted by the hour."""
    scope = _scope(team_id, states)
    start = hour_of(since)
    hours = rollup_rows(
        (ClientExpiryCountAllTeams, ClientExpiryCount), {"state", "risk_tier", "expires_hour"}, team_id=team_id
    )
    rows = union_sum(
        [
            (
                hours.filter(state__in=list(states), expires_hour__gte=start),
                {"risk_tier": "risk_tier", "expires_hour": "expires_hour"},
                "n",
            ),
            (
                ClientCountDelta.objects.filter(scope, expires_at__gte=start),
                {"risk_tier": "risk_tier", **_DELTA_EXPIRY},
                "n",
            ),
        ],
        width=2,
    )
    return [(tier, normal_key("expiry", (0, "", tier, hour))[3], int(n)) for tier, hour, n in rows]


@dataclass(frozen=True)
class DayCounts:
    created: dict[date, int]
    ended: dict[date, int]


def per_day(*, since: date, team_id: int | None = None) -> DayCounts:
    """Clients created and ended per day from ``since`` (UTC days), whatever their state now."""
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    team = Q() if team_id is None else Q(team_id=team_id)
    deltas = ClientCountDelta.objects.filter(team)
    days = rollup_rows((ClientDayCountAllTeams, ClientDayCount), {"day", "kind"}, team_id=team_id)
    rows = union_sum(
        [
            (days.filter(day__gte=since), {"kind": "kind", "day": "day"}, "n"),
            (
                deltas.filter(created_at__gte=start),
                {"kind": Value("created"), "day": TruncDate("created_at", tzinfo=UTC)},
                "n",
            ),
            (
                deltas.filter(ended_at__gte=start),
                {"kind": Value("ended"), "day": TruncDate("ended_at", tzinfo=UTC)},
                "n",
            ),
        ],
        width=2,
    )
    out: dict[str, dict[date, int]] = {"created": {}, "ended": {}}
    for kind, day, n in rows:
        out[kind][normal_key("day", (day, 0, kind))[0]] = int(n)
    return DayCounts(created=out["created"], ended=out["ended"])


def within(hours: list[tuple[str, datetime, int]], start: datetime, end: datetime) -> int:
    return sum(n for _, hour, n in hours if start <= hour < end)


def expiring_within(now: datetime, period: timedelta, hours: list[tuple[str, datetime, int]]) -> int:
    start = hour_of(now)
    return within(hours, start, start + period)


__all__ = [
    "histogram",
    "hour_of",
    "live_totals",
    "overshoot_histogram",
    "DayCounts",
    "attestation_days",
    "attestation_weeks",
    "cube",
    "expiring",
    "expiring_within",
    "orphaned_hours",
    "owners_total",
    "per_day",
    "rollup_rows",
    "smallest_table",
    "top_owners",
    "union_sum",
]


def attestation_weeks(*, team_id: int | None = None, team_ids: list[int] | None = None) -> list[tuple]:
    """(risk tier, week, clients) of the active managed clients by the UTC week (its Monday) their attestation
    period started (their last attestation, else activation, else creation); of one team or of ``team_ids`` (an
    attestation rule scoped to teams). Everyone's: :func:`attestation_days`."""
    deltas = ClientCountDelta.objects.filter(state=ClientState.ACTIVE, managed=True, attest_basis__isnull=False)
    if team_ids is not None:
        rows = ClientAttestCount.objects.filter(team_id__in=team_ids)
        deltas = deltas.filter(team_id__in=team_ids)
    elif team_id is not None:
        rows = ClientAttestCount.objects.filter(team_id=team_id)
        deltas = deltas.filter(team_id=team_id)
    else:
        raise ValueError("every team's attestation is counted by day: attestation_days()")
    columns = {"risk_tier": "risk_tier", "week": "week"}
    result = union_sum(
        [(rows, columns, "n"), (deltas, {**columns, "week": TruncWeek("attest_basis", tzinfo=UTC)}, "n")],
        width=2,
    )
    return [(tier, normal_key("attest", (0, tier, week))[2], int(n)) for tier, week, n in result]


def attestation_days() -> list[tuple]:
    """(risk tier, day, clients) of every team's active managed clients by the UTC day their attestation period
    started."""
    deltas = ClientCountDelta.objects.filter(state=ClientState.ACTIVE, managed=True, attest_basis__isnull=False)
    columns = {"risk_tier": "risk_tier", "day": "day"}
    result = union_sum(
        [
            (ClientAttestDayCount.objects.all(), columns, "n"),
            (deltas, {**columns, "day": TruncDate("attest_basis", tzinfo=UTC)}, "n"),
        ],
        width=2,
    )
    return [(tier, normal_key("attest_day", (tier, day))[1], int(n)) for tier, day, n in result]


def orphaned_hours(*, before: datetime, team_id: int | None = None) -> list[tuple[datetime, int]]:
    """(hour, clients) of the active and provisioning clients whose owner left, by the hour they were orphaned,
    for the hours before ``before`` (the orphan-grace control's whole hours past grace)."""
    deltas = ClientCountDelta.objects.filter(
        state__in=sorted(ORPHAN_COUNTED_STATES), orphaned_at__isnull=False, orphaned_at__lt=hour_of(before)
    )
    deltas = deltas if team_id is None else deltas.filter(team_id=team_id)
    hours = rollup_rows((ClientOrphanCountAllTeams, ClientOrphanCount), {"orphaned_hour"}, team_id=team_id)
    rows = union_sum(
        [
            (hours.filter(orphaned_hour__lt=hour_of(before)), {"orphaned_hour": "orphaned_hour"}, "n"),
            (deltas, {"orphaned_hour": TruncHour("orphaned_at", tzinfo=UTC)}, "n"),
        ],
        width=1,
    )
    return [(normal_key("orphan", (0, hour))[1], int(n)) for hour, n in rows]
