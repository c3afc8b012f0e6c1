"""A team's own dashboard and framework report, from the counts: who sees which team, the team's figures only,
the 90-day activity axis, and a query count that does not grow with the number of clients."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory.choices import ClientState, RiskTier
from inventory.counts import counts_fold
from inventory.models import Client
from inventory.reports.controls import measure_controls
from inventory.selectors.dashboard import _live_breakdown_orm, dashboard_data, live_breakdown, live_breakdown_raw
from inventory.selectors.search import is_postgres
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_teams(idp, owner, team):
    other = TeamFactory(name="Data", slug="data")
    team.members.add(owner)
    now = timezone.now()
    for i in range(3):
        ClientFactory(idp=idp, owner=owner, team=team, risk_tier=RiskTier.HIGH if i == 0 else RiskTier.LOW)
    ClientFactory(idp=idp, owner=owner, team=team, state=ClientState.RETIRED, ended_at=now)
    someone = UserFactory(username="dora", roles=["owner"])
    for _ in range(2):
        ClientFactory(idp=idp, owner=someone, team=other, purpose="")
    return team, other


def test_an_owner_sees_their_teams_dashboard_with_its_figures_only(client, owner, two_teams):
    team, _other = two_teams
    client.force_login(owner)
    response = client.get(f"/dashboards/teams/{team.slug}/")
    assert response.status_code == 200
    d = response.context["d"]
    assert d["team"] == team
    assert d["totals"]["live"] == 3
    assert d["by_tier"] == [("low", 2), ("medium", 0), ("high", 1)]
    assert d["by_team"] == [("Platform", 3)]
    assert d["activity"]["created"][-1] == 4 and d["activity"]["ended"][-1] == 1
    assert len(d["activity"]["labels"]) == 90
    html = response.content.decode()
    assert "Sprawl dashboard: Platform" in html
    assert f'href="/dashboards/teams/{team.slug}/live-by-tier.csv"' in html
    csv = client.get(f"/dashboards/teams/{team.slug}/live-by-tier.csv").content.decode()
    assert csv.splitlines() == ["label,Live clients", "low,2", "medium,0", "high,1"]


def test_an_owner_may_not_see_another_teams_dashboard_or_report(client, owner, two_teams):
    _team, other = two_teams
    client.force_login(owner)
    assert client.get(f"/dashboards/teams/{other.slug}/").status_code == 403
    assert client.get(f"/dashboards/teams/{other.slug}/live-by-tier.csv").status_code == 403
    assert client.get(f"/reports/frameworks/teams/{other.slug}/").status_code == 403
    listing = client.get("/dashboards/teams/")
    assert [t.slug for t in listing.context["teams"]] == ["platform"]


def test_security_sees_every_team_and_bad_requests_change_nothing(client, security_user, two_teams):
    team, other = two_teams
    client.force_login(security_user)
    assert [t.slug for t in client.get("/dashboards/teams/").context["teams"]] == ["data", "platform"]
    assert client.get(f"/dashboards/teams/{other.slug}/").context["d"]["totals"]["live"] == 2
    assert client.get("/dashboards/teams/no-such-team/").status_code == 404
    assert client.get(f"/dashboards/teams/{team.slug}/nonsense.csv").status_code == 404
    before = Client.objects.count()
    assert client.post(f"/dashboards/teams/{team.slug}/").status_code == 403
    assert Client.objects.count() == before


def test_anonymous_is_sent_to_sign_in(client, two_teams):
    response = client.get("/dashboards/teams/platform/")
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_team_framework_report_measures_the_team_only(client, security_user, two_teams):
    team, other = two_teams
    by_key = {r.control.key: r for r in measure_controls(team=other)}
    assert (by_key["purpose_recorded"].total, by_key["purpose_recorded"].failing) == (2, 2)
    assert by_key["purpose_recorded"].drill_down == "failing=purpose_recorded&team=data"
    by_key = {r.control.key: r for r in measure_controls(team=team)}
    assert (by_key["purpose_recorded"].total, by_key["purpose_recorded"].failing) == (3, 0)
    client.force_login(security_user)
    html = client.get(f"/reports/frameworks/teams/{other.slug}/").content.decode()
    assert "Framework-mapping report: Data" in html and "failing=purpose_recorded&amp;team=data" in html


def _raw(now):
    return live_breakdown_raw(now) if is_postgres() else _live_breakdown_orm(now)


@pytest.mark.parametrize("folded", [False, True], ids=["deltas-unfolded", "folded"])
def test_the_counts_give_the_same_breakdown_as_the_client_table(idp, folded):
    teams = [TeamFactory(), TeamFactory(), None]
    owners = [UserFactory() for _ in range(4)]
    now = timezone.now()
    for i in range(40):
        c = ClientFactory(
            idp=idp,
            owner=owners[i % 4],
            team=teams[i % 3],
            risk_tier=[RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH][i % 3],
            created_via=["token", "cimd", "spawn", "admin"][i % 4],
            depth=i % 2,
            managed=i % 7 != 0,
            sync_failed=i % 5 == 0,
            expires_at=None if i % 11 == 0 else now + timedelta(hours=3 * i),
        )
        if i % 6 == 0:
            Client.objects.filter(pk=c.pk).update(state=ClientState.EXPIRED, ended_at=now)
        if i % 9 == 0:
            Client.objects.filter(pk=c.pk).update(orphaned_at=now, stale_at=now)
    if folded:
        counts_fold()
    got, raw = live_breakdown(now), _raw(now)
    for key in ("by_tier", "depth", "by_created_via", "by_idp", "by_team", "top_owners"):
        assert got[key] == raw[key], key
    for key in ("live", "orphaned", "stale", "unmanaged", "sync_failed"):
        assert got["totals"][key] == raw["totals"][key], key


DASHBOARD_QUERIES = 11
# The rollups keyed by team (and owner): a dashboard for everyone reads their all-teams projections instead.
TEAM_KEYED = (
    "inventory_clientcount",
    "inventory_clientownercount",
    "inventory_clientexpirycount",
    "inventory_clientdaycount",
    "inventory_clientovershootcount",
    "approvals_requestdaycount",
    "approvals_requestcoalescedcount",
    "approvals_requestdecisioncount",
)


def _dashboard_queries(team) -> int:
    with CaptureQueriesContext(connection) as queries:
        dashboard_data(team=team)
    return len(queries)


@pytest.mark.parametrize("scope", ["everyone", "team"])
def test_dashboard_queries_do_not_grow_with_the_clients(idp, owner, team, scope):
    target = team if scope == "team" else None
    ClientFactory.create_batch(3, idp=idp, owner=owner, team=team)
    small = _dashboard_queries(target)
    for i in range(60):
        ClientFactory(idp=idp, owner=UserFactory(), team=team if i % 2 else TeamFactory(), risk_tier=RiskTier.MEDIUM)
    counts_fold()
    ClientFactory.create_batch(5, idp=idp, owner=owner, team=team)  # some deltas unfolded too
    assert _dashboard_queries(target) == small
    # every figure from the counts, one statement each, never the client table nor the request table: clients per
    # team, the cube, top owners, expiry hours, activity per day, three names, registrations per day by outcome
    # (+ coalesced), the time-to-decision histogram and the expiry overshoot histogram
    with CaptureQueriesContext(connection) as queries:
        dashboard_data(team=target)
    sqls = [q["sql"] for q in queries]
    assert len(sqls) == DASHBOARD_QUERIES, sqls
    assert not [sql for sql in sqls if re.search(r"\binventory_client\b", sql)]
    assert not [sql for sql in sqls if re.search(r"\bapprovals_registrationrequest\b", sql)]
    team_keyed = {table for sql in sqls for table in TEAM_KEYED if re.search(rf"\b{table}\b", sql)}
    if scope == "everyone":  # rows per state × tier × …, never per team × owner
        assert team_keyed == set()
    else:  # one team's rows of every team-keyed rollup
        assert team_keyed == set(TEAM_KEYED)
