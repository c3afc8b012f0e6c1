"""Counts kept as registration requests change: approvals' count source for ``inventory.counts``.

The request table's trigger (migration ``0019_request_counts``) inserts a -1 delta for the signature a request
had and a +1 delta for the one it has, in the transaction that changes it — submission, approval, denial,
withdrawal (by the registrant, by break glass), lapse, narrowing, coalescing, admin edits, raw SQL alike — and
only when a counted column changed. The deltas fold into three rollups through inventory's one folder, and
``reconcile_counts`` recounts them from the requests:

- ``requests_day``: requests per (UTC day submitted, team, state, policy outcome, tier) — registrations per day
  by outcome on the dashboards;
- ``requests_coalesced``: anonymous registrations coalesced into a request, per (day submitted, team);
- ``requests_decision``: human decisions per (UTC day decided, team, time-to-decision bucket) — the
  p50/p90 time to decision from buckets (``inventory.histograms``), not from a scan of the requests;

and each of them summed over the teams (``*_all``, derived by inventory's folder), which the security dashboard
reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime

from django.db.models import Value
from django.db.models.functions import Coalesce

from approvals import approval_flags
from approvals.choices import PolicyOutcome, RequestState
from approvals.models import (
    RegistrationRequest,
    RequestCoalescedCount,
    RequestCoalescedCountAllTeams,
    RequestCountDelta,
    RequestDayCount,
    RequestDayCountAllTeams,
    RequestDecisionCount,
    RequestDecisionCountAllTeams,
)
from inventory.counts import (
    CountSource,
    KeptFlags,
    Projection,
    Tallies,
    as_date,
    as_datetime,
    count_source_register,
    kept_flags_register,
    nonzero,
)
from inventory.histograms import seconds_bucket

DELTA_COLUMNS = ("n", "state", "outcome", "risk_tier", "team_id", "created_at", "decided_at", "coalesced_count")
ROLLUPS = {
    "requests_day": (RequestDayCount, ("day", "team_id", "state", "outcome", "risk_tier")),
    "requests_coalesced": (RequestCoalescedCount, ("day", "team_id")),
    "requests_decision": (RequestDecisionCount, ("day", "team_id", "bucket")),
}
# The same three summed over the teams, for the security dashboard (inventory.counts.Projection).
PROJECTIONS = {
    "requests_day_all": Projection(RequestDayCountAllTeams, ("day", "state", "outcome", "risk_tier"), "requests_day"),
    "requests_coalesced_all": Projection(RequestCoalescedCountAllTeams, ("day",), "requests_coalesced"),
    "requests_decision_all": Projection(RequestDecisionCountAllTeams, ("day", "bucket"), "requests_decision"),
}
HUMAN_DECIDED = (RequestState.APPROVED, RequestState.DENIED)


def decision_seconds(state: str, outcome: str, created_at, decided_at) -> float | None:
    """Seconds from submission to a person's decision, or None when nobody decided it (pending, auto-approved,
    refused by policy, withdrawn, lapsed)."""
    if state not in HUMAN_DECIDED or outcome == PolicyOutcome.AUTO_APPROVE:
        return None
    created, decided = as_datetime(created_at), as_datetime(decided_at)
    if created is None or decided is None:
        return None
    return (decided - created).total_seconds()


def tally(rows: Iterable[tuple]) -> Tallies:
    """Request deltas (rows in ``DELTA_COLUMNS`` order) as additions to each rollup."""
    out: Tallies = {name: Counter() for name in ROLLUPS}
    for n, state, outcome, tier, team_id, created_at, decided_at, coalesced in rows:
        day = as_date(as_datetime(created_at))  # created_at is NOT NULL
        out["requests_day"][(day, team_id, state, outcome, tier)] += n
        if coalesced:
            out["requests_coalesced"][(day, team_id)] += n * coalesced
        seconds = decision_seconds(state, outcome, created_at, decided_at)
        if seconds is not None:
            decided = as_date(as_datetime(decided_at))
            out["requests_decision"][(decided, team_id, seconds_bucket(seconds))] += n
    return nonzero(out)


def recount() -> Tallies:
    """Every request rollup from the requests: one pass over the request table, through :func:`tally` (the same
    arithmetic the folder does; nightly, not per request)."""
    rows = (
        RegistrationRequest.objects.order_by()
        .annotate(k_team=Coalesce("team_id", Value(0)))
        .values_list("state", "outcome", "risk_tier", "k_team", "created_at", "decided_at", "coalesced_count")
        .iterator(chunk_size=10_000)
    )
    return tally((1, *row) for row in rows)


def normal_key(name: str, key: tuple) -> tuple:
    """A rollup key as read back through the ORM, in the form :func:`tally` makes (a date for ``day``)."""
    return (as_date(key[0]), *key[1:])


def day_start(since: date) -> datetime:
    return datetime.combine(since, datetime.min.time(), tzinfo=UTC)


SOURCE = CountSource(
    name="requests",
    delta=RequestCountDelta,
    delta_columns=DELTA_COLUMNS,
    rollups=ROLLUPS,
    tally=tally,
    recount=recount,
    normal_key=normal_key,
    projections=PROJECTIONS,
)


def register() -> None:
    count_source_register(SOURCE)
    # the clients' two-person approval flag, kept from the approvals: checked and repaired with the counts
    kept_flags_register(
        KeptFlags("approvals", lambda vendor: approval_flags.drift_sql(), lambda vendor: approval_flags.recompute_sql())
    )


__all__ = [
    "DELTA_COLUMNS",
    "PROJECTIONS",
    "ROLLUPS",
    "SOURCE",
    "day_start",
    "decision_seconds",
    "recount",
    "register",
    "tally",
]
