"""Counts kept as registration requests change (approvals.counts): the trigger's deltas, the dashboard's
registrations per day by outcome and time to decision read from them, reconcile and repair."""

from __future__ import annotations

import importlib
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models.functions import TruncDate
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.inventory_hooks import registration_stats
from approvals.models import (
    RegistrationRequest,
    RequestCoalescedCountAllTeams,
    RequestCountDelta,
    RequestDayCount,
    RequestDayCountAllTeams,
    RequestDecisionCount,
    RequestDecisionCountAllTeams,
)
from inventory.counts import counts_current, counts_fold, counts_reconcile, counts_recount
from inventory.histograms import RELATIVE_WIDTH, seconds_bucket
from portal.models import AuditEvent
from tests.factories import RequestFactory, TeamFactory
from tests.migrating import StatementsOnly

pytestmark = pytest.mark.django_db

REQUEST_TRIGGER = importlib.import_module("approvals.migrations.0019_request_counts").REQUEST_TRIGGER
DAYS = 90


def _start() -> datetime:
    today = timezone.now().astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)


def _request(state, outcome, *, created, decided=None, team=None, tier="medium", coalesced=0):
    r = RequestFactory(state=state, outcome=outcome, team=team, risk_tier=tier)
    RegistrationRequest.objects.filter(pk=r.pk).update(
        created_at=created, decided_at=decided, coalesced_count=coalesced
    )
    return r


def _world(n: int, *, seed: int = 7) -> list[RegistrationRequest]:
    """``n`` requests over the last 100 days in every state, for two teams and none, decided after 1 s to 3 days."""
    rng = random.Random(seed)
    teams = [TeamFactory(), TeamFactory(), None]
    now = timezone.now()
    kinds = [
        ("approved", "auto_approve"),
        ("approved", "review"),
        ("denied", "review"),
        ("refused", "refuse"),
        ("pending", "review"),
        ("withdrawn", "review"),
        ("lapsed", "review"),
    ]
    out = []
    for i in range(n):
        state, outcome = kinds[i % len(kinds)]
        created = now - timedelta(days=rng.uniform(0, 100))
        decided = None if state in ("pending", "refused") else created + timedelta(seconds=rng.uniform(1, 3 * 86400))
        out.append(
            _request(
                state,
                outcome,
                created=created,
                decided=decided,
                team=teams[i % 3],
                tier=rng.choice(["low", "medium", "high"]),
                coalesced=rng.choice([0, 0, 2]),
            )
        )
    return out


def _labels(state: str, outcome: str) -> str | None:
    return {
        ("approved", True): "auto-approved",
        ("approved", False): "human-approved",
        ("denied", False): "denied",
        ("refused", False): "refused",
    }.get((state, outcome == "auto_approve"))


def _recount(start: datetime, team_id: int | None):
    """The dashboard's figures straight from the request table (what the counts replaced): the reference."""
    requests = (
        RegistrationRequest.objects.all() if team_id is None else RegistrationRequest.objects.filter(team=team_id)
    )
    outcomes: dict[str, Counter] = {}
    coalesced = 0
    for state, outcome, day, n in requests.filter(created_at__gte=start).values_list(
        "state", "outcome", TruncDate("created_at", tzinfo=UTC), "coalesced_count"
    ):
        coalesced += n
        if label := _labels(state, outcome):
            outcomes.setdefault(label, Counter())[day] += 1
    human = requests.filter(decided_at__gte=start, state__in=["approved", "denied"]).exclude(outcome="auto_approve")
    seconds = [(d - c).total_seconds() for c, d in human.values_list("created_at", "decided_at")]
    return outcomes, coalesced, seconds


def _exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def test_the_triggers_exist_after_a_full_migrate():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger "
                "WHERE tgrelid = 'approvals_registrationrequest'::regclass AND NOT tgisinternal"
            )
        else:
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'approvals_registrationrequest'"
            )
        names = {row[0] for row in cursor.fetchall()}
    assert REQUEST_TRIGGER.names(connection.vendor) <= names


def test_a_decision_writes_one_minus_and_one_plus_delta_and_an_unrelated_update_none():
    r = RequestFactory(state="pending", outcome="review")
    assert list(RequestCountDelta.objects.values_list("n", "state")) == [(1, "pending")]
    RegistrationRequest.objects.filter(pk=r.pk).update(decision_reason="looked at it", client_name="renamed")
    assert RequestCountDelta.objects.count() == 1
    RegistrationRequest.objects.filter(pk=r.pk).update(state="approved", decided_at=timezone.now())
    assert sorted(RequestCountDelta.objects.values_list("n", "state")) == [
        (-1, "pending"),
        (1, "approved"),
        (1, "pending"),
    ]
    assert counts_current() == counts_recount()


@pytest.mark.parametrize("folded", [False, True], ids=["deltas-unfolded", "folded"])
@pytest.mark.parametrize("scope", ["everyone", "team"])
def test_registrations_per_day_and_time_to_decision_match_a_recount_of_the_requests(folded, scope):
    requests = _world(120)
    if folded:
        counts_fold(batch=50)
        # a few changes after the fold stay as deltas: a decision, a withdrawal, a coalesced registration
        pending = [r for r in requests if r.state == "pending"]
        RegistrationRequest.objects.filter(pk=pending[0].pk).update(state="approved", decided_at=timezone.now())
        RegistrationRequest.objects.filter(pk=pending[1].pk).update(state="withdrawn", decided_at=timezone.now())
        RegistrationRequest.objects.filter(pk=requests[0].pk).update(coalesced_count=5)
    team_id = requests[0].team_id if scope == "team" else None
    start = _start()
    stats = registration_stats(start, team_id)
    outcomes, coalesced, seconds = _recount(start, team_id)
    assert {label: dict(c) for label, c in stats.outcomes.items() if c} == {k: dict(v) for k, v in outcomes.items()}
    assert stats.coalesced == coalesced > 0
    assert len(seconds) >= 10
    median, p90 = _exact_percentile(seconds, 0.5), _exact_percentile(seconds, 0.9)
    assert stats.median_seconds_to_decision == pytest.approx(median, rel=RELATIVE_WIDTH)
    assert stats.p90_seconds_to_decision == pytest.approx(p90, rel=RELATIVE_WIDTH)
    # the histogram holds every human decision of the window, each in its own value's bucket
    buckets = Counter(seconds_bucket(s) for s in seconds)
    assert sum(buckets.values()) == len(seconds)
    assert counts_current() == counts_recount()


def test_an_empty_window_has_no_time_to_decision():
    _request(
        "approved", "review", created=timezone.now() - timedelta(days=200), decided=timezone.now() - timedelta(days=150)
    )
    stats = registration_stats(_start(), None)
    assert stats.median_seconds_to_decision is None and stats.p90_seconds_to_decision is None
    assert all(not c for c in stats.outcomes.values())


def _stats_queries(team_id) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        registration_stats(_start(), team_id)
    return [q["sql"] for q in queries]


@pytest.mark.parametrize("scope", ["everyone", "team"])
def test_the_dashboard_figures_read_two_statements_and_never_the_request_table(scope):
    requests = _world(10, seed=1)
    team_id = requests[0].team_id if scope == "team" else None
    small = _stats_queries(team_id)
    _world(150, seed=2)
    counts_fold()
    _world(20, seed=3)  # deltas not folded yet
    large = _stats_queries(team_id)
    assert len(small) == len(large) == 2  # outcomes per day (+ coalesced), the time-to-decision histogram
    assert not [sql for sql in large if re.search(r"\bapprovals_registrationrequest\b", sql)]


def test_reconcile_reports_request_drift_and_repairs_it_with_one_audit_event():
    _world(30)
    counts_fold()
    assert counts_reconcile().keys == 0
    RequestDayCount.objects.filter(pk=RequestDayCount.objects.order_by("pk").values("pk")[:1]).update(n=40)
    RequestDecisionCount.objects.all().delete()  # a histogram lost
    drift = counts_reconcile()
    assert drift.corrections["requests_day"] and drift.corrections["requests_decision"] and not drift.repaired
    assert set(drift.summary()) == {"requests_day", "requests_decision"}
    drift = counts_reconcile(repair=True)
    assert drift.repaired
    event = AuditEvent.objects.get(action="counts.repaired")
    assert event.object_id == "requests"
    assert counts_reconcile().keys == 0
    assert counts_current() == counts_recount()


def test_a_change_the_trigger_misses_is_drift():
    """What the property test relies on: without the UPDATE trigger a decision is not counted, and the
    recount says so."""
    r = RequestFactory(state="pending", outcome="review")
    with connection.cursor() as cursor:
        for statement in REQUEST_TRIGGER.backward(connection.vendor):
            if "_update" in statement:
                cursor.execute(statement)
    RegistrationRequest.objects.filter(pk=r.pk).update(state="denied", decided_at=timezone.now())
    assert counts_reconcile().keys > 0
    # the trigger back, as the migration left it (the test transaction rolls the DDL back too)
    with connection.cursor() as cursor:
        for statement in REQUEST_TRIGGER.forward(connection.vendor):
            cursor.execute(statement)


def test_the_migration_fills_the_all_teams_projections_as_the_folder_keeps_them():
    """0020 fills each all-teams projection from its rollup's folded rows with SQL of its own: it must agree with
    approvals.counts.PROJECTIONS, which the folder keeps."""
    _world(60)
    counts_fold()
    expected = counts_current()
    assert expected["requests_day_all"] and expected["requests_decision_all"] and expected["requests_coalesced_all"]
    for model in (RequestDayCountAllTeams, RequestCoalescedCountAllTeams, RequestDecisionCountAllTeams):
        model.objects.all().delete()
    migration = importlib.import_module("approvals.migrations.0020_request_count_projections")
    migration.fill(None, StatementsOnly())
    assert counts_current() == expected
    assert counts_reconcile().keys == 0
