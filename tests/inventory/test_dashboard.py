"""Sprawl dashboard: every number on a small known dataset, the chart contract, tables and CSVs."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone

from approvals.models import RegistrationRequest
from inventory.choices import ClientState, RiskTier
from inventory.counts import counts_fold
from inventory.histograms import RELATIVE_WIDTH, bucket_bounds, seconds_bucket
from inventory.models import Client
from inventory.selectors.dashboard import dashboard_data
from tests.factories import ClientFactory, RequestFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_reports(settings):
    """Each test measures its own data: no cached dashboard/report snapshot from another test."""
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0


def noon(days_ago: int) -> datetime:
    day = timezone.localdate() - timedelta(days=days_ago)
    return timezone.make_aware(datetime.combine(day, time(12, 0)))


@pytest.fixture
def known(idp, owner, team):
    bob2 = UserFactory(username="bob2")
    now = timezone.now()
    a = ClientFactory(
        name="A", idp=idp, owner=owner, team=team, risk_tier=RiskTier.LOW, expires_at=now + timedelta(days=2)
    )
    b = ClientFactory(
        name="B",
        idp=idp,
        owner=owner,
        risk_tier=RiskTier.HIGH,
        orphaned_at=now,
        sync_failed=True,
        expires_at=now + timedelta(days=10),
    )
    c = ClientFactory(
        name="C",
        idp=idp,
        owner=bob2,
        risk_tier=RiskTier.MEDIUM,
        state=ClientState.SUSPENDED,
        managed=False,
        stale_at=now,
        parent=a,
        depth=1,
        expires_at=None,
    )
    d = ClientFactory(
        name="D", idp=idp, owner=bob2, state=ClientState.EXPIRED, ended_at=noon(5), expiry_overshoot_seconds=2.0
    )
    e = ClientFactory(
        name="E", idp=idp, owner=bob2, state=ClientState.RETIRED, ended_at=noon(50), expiry_overshoot_seconds=10.0
    )
    for client, days in ((a, 10), (b, 3), (c, 0), (d, 20), (e, 100)):
        Client.objects.filter(pk=client.pk).update(created_at=noon(days))

    def req(state, outcome, days_ago, decided_after=None):
        r = RequestFactory(state=state, outcome=outcome)
        created = noon(days_ago)
        RegistrationRequest.objects.filter(pk=r.pk).update(
            created_at=created, decided_at=created + timedelta(seconds=decided_after) if decided_after else None
        )

    req("approved", "auto_approve", 0, 1)
    req("approved", "review", 2, 3600)
    req("denied", "review", 1, 7200)
    req("approved", "review", 4, 10800)
    req("refused", "refuse", 0)
    req("pending", "review", 0)
    req("approved", "review", 120, 99999)  # outside the 90-day window
    return {"a": a, "b": b, "c": c, "d": d, "e": e}


@pytest.mark.parametrize("folded", [False, True], ids=["deltas-unfolded", "folded"])
def test_dashboard_numbers(known, folded):
    if folded:  # the same figures whether the counts' deltas were folded into the rollups or not
        counts_fold()
    data = dashboard_data()
    assert data["totals"] == {"live": 3, "orphaned": 1, "stale": 1, "unmanaged": 1, "sync_failed": 1, "expiring_7d": 1}
    labels, values = data["live_series"]["labels"], data["live_series"]["values"]
    assert len(labels) == len(values) == 90
    assert labels[-1] == timezone.localdate().isoformat()
    live = dict(zip(labels, values, strict=True))

    def on(days_ago):
        return live[(timezone.localdate() - timedelta(days=days_ago)).isoformat()]

    assert on(0) == 3  # A, B, C
    assert on(1) == 2  # C not created yet
    assert on(3) == 2  # A, B
    assert on(4) == 1  # A (D ended on day -5)
    assert on(6) == 2  # A, D
    assert on(11) == 1  # D
    assert on(21) == 0
    assert on(60) == 1  # E, retired 50 days ago
    assert on(89) == 1

    totals = data["registrations"]["totals"]
    assert totals == {"auto-approved": 1, "human-approved": 2, "denied": 1, "refused": 1}
    series = data["registrations"]["series"]
    assert series["human-approved"][-3] == 1 and series["human-approved"][-5] == 1
    assert series["refused"][-1] == 1 and series["auto-approved"][-1] == 1
    assert data["auto_approval_ratio"] == pytest.approx(0.2)
    # from the buckets (inventory.histograms): within one bucket's width of percentile_cont over the values
    assert data["time_to_decision"]["median_seconds"] == pytest.approx(7200, rel=RELATIVE_WIDTH)
    assert data["time_to_decision"]["p90_seconds"] == pytest.approx(10080, rel=RELATIVE_WIDTH)
    assert data["expiry_overshoot_p99"] == pytest.approx(9.92, rel=RELATIVE_WIDTH)
    low, high = bucket_bounds(seconds_bucket(7200))  # the median is one value: it stays in that value's bucket
    assert low <= data["time_to_decision"]["median_seconds"] < high
    assert data["by_tier"] == [("low", 1), ("medium", 1), ("high", 1)]
    assert data["top_owners"] == [("olivia", 2), ("bob2", 1)]
    assert data["depth"] == [(0, 2), (1, 1)]
    assert dict(data["by_team"]) == {"(no team)": 2, "Platform": 1}
    assert data["by_idp"] == [("test-dry-run", 3)]


def test_dashboard_page_charts_tables_and_links(client, security_user, known):
    client.force_login(security_user)
    response = client.get("/dashboards/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<canvas data-chart="chart-live-over-time">' in html
    spec = json.loads(html.split('<script id="chart-live-by-tier" type="application/json">')[1].split("</script>")[0])
    assert spec == {
        "type": "doughnut",
        "labels": ["low", "medium", "high"],
        "datasets": [
            {"label": "Live clients", "data": [1, 1, 1], "backgroundColor": ["#2e8540", "#d08700", "#b42318"]}
        ],
    }
    assert '<caption class="sr-only">Live clients by risk tier</caption>' in html
    assert 'href="/inventory/?live=true&amp;orphaned=true"' in html
    assert 'href="/dashboards/live-by-tier.csv"' in html
    median = response.context["d"]["time_to_decision"]["median_seconds"]
    assert median == pytest.approx(7200, rel=RELATIVE_WIDTH)
    assert f"{round(median):,} s" in html and "20 %" in html


def test_dashboard_csv_per_chart(client, security_user, known):
    client.force_login(security_user)
    rows = list(csv.reader(io.StringIO(client.get("/dashboards/top-owners.csv").content.decode())))
    assert rows == [["label", "Live clients"], ["olivia", "2"], ["bob2", "1"]]
    rows = list(csv.reader(io.StringIO(client.get("/dashboards/registrations-by-outcome.csv").content.decode())))
    assert rows[0] == ["label", "auto-approved", "human-approved", "denied", "refused"]
    assert len(rows) == 91
    summary = dict(csv.reader(io.StringIO(client.get("/dashboards/summary.csv").content.decode())))
    assert summary["live"] == "3"
    assert float(summary["median_time_to_decision_seconds"]) == pytest.approx(7200, rel=RELATIVE_WIDTH)
    assert client.get("/dashboards/nonsense.csv").status_code == 404


def test_empty_dashboard(client, security_user, db):
    client.force_login(security_user)
    response = client.get("/dashboards/")
    assert response.status_code == 200
    data = response.context["d"]
    assert data["totals"]["live"] == 0 and data["auto_approval_ratio"] is None
    assert data["time_to_decision"] == {"median_seconds": None, "p90_seconds": None}


def test_admin_sees_dashboard(client, admin_user, db):
    TeamFactory()
    client.force_login(admin_user)
    assert client.get("/dashboards/").status_code == 200


def test_the_dashboard_is_read_live_from_the_counts(client, security_user, known, settings, django_assert_num_queries):
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.REGISTRAR_REPORT_CACHE_SECONDS = 60
    cache.clear()
    client.force_login(security_user)
    with CaptureQueriesContext(connection) as first_queries:
        first = client.get("/dashboards/")
    assert first.context["d"]["totals"]["live"] == 3
    ClientFactory(name="late", idp=known["a"].idp, owner=known["a"].owner)
    # no snapshot: the new client shows at once, for the same number of queries
    with django_assert_num_queries(len(first_queries)):
        second = client.get("/dashboards/")
    assert second.context["d"]["totals"]["live"] == 4
    assert cache.get("registrar:report:dashboard") is None


# --- colours that mean what they say, and a time axis that shows recent activity (issue 19) -------------------


def _spec(html: str, chart_id: str) -> dict:
    return json.loads(html.split(f'<script id="chart-{chart_id}" type="application/json">')[1].split("</script>")[0])


def test_risk_is_green_amber_red_and_denied_is_not_green(client, security_user, known):
    from inventory.reports.charts import DANGER, DANGER_DARK, OK, OK_LIGHT, WARN

    client.force_login(security_user)
    html = client.get("/dashboards/").content.decode()
    tier = _spec(html, "live-by-tier")
    assert dict(zip(tier["labels"], tier["datasets"][0]["backgroundColor"], strict=True)) == {
        "low": OK,
        "medium": WARN,
        "high": DANGER,
    }
    outcome = {ds["label"]: ds["backgroundColor"] for ds in _spec(html, "registrations-by-outcome")["datasets"]}
    assert outcome == {"auto-approved": OK_LIGHT, "human-approved": OK, "denied": DANGER, "refused": DANGER_DARK}
    greens = {OK, OK_LIGHT}
    assert (
        outcome["denied"] not in greens
        and outcome["refused"] not in greens
        and tier["datasets"][0]["backgroundColor"][2] not in greens
    )


def test_time_charts_open_on_recent_activity_and_keep_every_day_in_the_table(client, security_user, idp, owner):
    # All activity in the last three days: the 90-day axis opens 14 days back, not 90.
    ClientFactory(idp=idp, owner=owner)
    r = RequestFactory(state="denied", outcome="review")
    RegistrationRequest.objects.filter(pk=r.pk).update(created_at=noon(2))
    client.force_login(security_user)
    response = client.get("/dashboards/")
    html = response.content.decode()
    first_shown = (timezone.localdate() - timedelta(days=13)).isoformat()
    for chart_id in ("live-over-time", "registrations-by-outcome"):
        spec = _spec(html, chart_id)
        assert spec["xMin"] == first_shown and len(spec["labels"]) == 90
    assert _spec(html, "registrations-by-outcome")["stacked"] is True
    assert f"From {first_shown}, the first day with activity" in html


def test_each_time_chart_opens_on_its_own_activity(client, security_user, idp, owner):
    # A client created 40 days ago steps the live count then; registrations all happened today.
    old = ClientFactory(idp=idp, owner=owner)
    Client.objects.filter(pk=old.pk).update(created_at=noon(40))
    RequestFactory(state="approved", outcome="auto_approve")
    client.force_login(security_user)
    html = client.get("/dashboards/").content.decode()
    assert _spec(html, "live-over-time")["xMin"] == (timezone.localdate() - timedelta(days=41)).isoformat()
    assert _spec(html, "registrations-by-outcome")["xMin"] == (timezone.localdate() - timedelta(days=13)).isoformat()


def test_time_window_reaches_back_to_the_first_activity():
    from inventory.reports.charts import first_active_index

    quiet = [0] * 90
    assert first_active_index([5] * 90, [quiet]) == 76  # nothing happened: the last 14 days
    regs = [0] * 90
    regs[30] = 2
    assert first_active_index([5] * 90, [quiet, regs]) == 30
    live = [5] * 40 + [6] * 50  # the live count stepped up on day 40: show from the day before
    assert first_active_index(live, [quiet]) == 39
    assert first_active_index([1, 2, 3], [[0, 0, 0]]) == 0  # shorter than the minimum: everything
