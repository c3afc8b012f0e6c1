"""Client columns the database keeps (inventory.flag_triggers, approvals.approval_flags) and the framework report
that counts them: every way a flag can change, the drift check and repair, and that the report reads no client
beyond the failing ones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import approval_flags
from approvals.models import Decision
from inventory import flag_triggers
from inventory.choices import ClientState, RiskTier
from inventory.counts import counts_current, counts_fold, counts_reconcile, counts_recount
from inventory.models import Client, ScopeDefinition
from inventory.reports import controls as ctl
from inventory.reports.controls import measure_controls
from portal.models import AuditEvent
from tests.factories import ClientFactory, RequestFactory, TeamFactory

pytestmark = pytest.mark.django_db


def flags(client) -> tuple[bool, bool, bool]:
    row = Client.objects.values_list("uncatalogued_scopes", "outside_parent", "two_person_approved").get(pk=client.pk)
    return tuple(bool(v) for v in row)


def by_key(results):
    return {r.control.key: r for r in results}


def live(idp, owner, **overrides):
    values = {
        "idp": idp,
        "owner": owner,
        "purpose": "does a job",
        "scopes": ["tickets:read"],
        "risk_tier": RiskTier.LOW,
        "expires_at": timezone.now() + timedelta(hours=1),
    }
    return ClientFactory(**(values | overrides))


def test_the_triggers_exist_after_a_full_migrate():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        names = {row[0] for row in cursor.fetchall()}
    assert flag_triggers.trigger_names(connection.vendor) <= names
    assert approval_flags.trigger_names(connection.vendor) <= names


def test_a_scope_outside_the_catalogue_is_marked_and_a_catalogue_change_re_marks(idp, owner, catalogue):
    inside = live(idp, owner, scopes=["tickets:read"])
    outside = live(idp, owner, scopes=["tickets:read", "mystery:admin"])
    assert (flags(inside)[0], flags(outside)[0]) == (False, True)
    ScopeDefinition.objects.create(name="mystery:admin", sensitivity="low", category="read")
    assert (flags(inside)[0], flags(outside)[0]) == (False, False)
    ScopeDefinition.objects.filter(name="tickets:read").update(is_active=False)  # switched off: both now fail
    assert (flags(inside)[0], flags(outside)[0]) == (True, True)
    ScopeDefinition.objects.filter(name="tickets:read").update(is_active=True)
    Client.objects.filter(pk=outside.pk).update(scopes=["tickets:read"])
    ScopeDefinition.objects.filter(name="mystery:admin").delete()
    assert (flags(inside)[0], flags(outside)[0]) == (False, False)
    Client.objects.filter(pk=inside.pk).update(scopes=["gone:scope"])  # narrowing paths write scopes too
    assert flags(inside)[0] is True


def test_a_child_is_marked_when_it_or_its_parent_changes(idp, owner, catalogue):
    parent = live(idp, owner, scopes=["tickets:read", "docs:read"])
    child = live(idp, owner, parent=parent, depth=1, scopes=["docs:read"], expires_at=parent.expires_at)
    assert flags(child)[1] is False
    Client.objects.filter(pk=parent.pk).update(scopes=["tickets:read"])  # the parent narrowed: the child holds more
    assert flags(child)[1] is True
    Client.objects.filter(pk=parent.pk).update(scopes=["tickets:read", "docs:read"])
    assert flags(child)[1] is False
    Client.objects.filter(pk=parent.pk).update(expires_at=parent.expires_at - timedelta(minutes=1))  # outlives it
    assert flags(child)[1] is True
    Client.objects.filter(pk=child.pk).update(expires_at=None)
    assert flags(child)[1] is True
    Client.objects.filter(pk=child.pk).update(expires_at=parent.expires_at - timedelta(minutes=2))
    assert flags(child)[1] is False
    assert flags(parent)[1] is False  # no parent: never outside one


def test_nothing_but_the_triggers_sets_a_flag(idp, owner, catalogue):
    """A stale instance saved whole, or a direct write of the column, cannot put a wrong value in."""
    client = live(idp, owner, scopes=["tickets:read"])
    stale = Client.objects.get(pk=client.pk)
    ScopeDefinition.objects.filter(name="tickets:read").update(is_active=False)
    assert flags(client)[0] is True
    stale.name = "renamed"
    stale.save()
    assert flags(client)[0] is True
    Client.objects.filter(pk=client.pk).update(uncatalogued_scopes=False, outside_parent=True)
    assert flags(client)[:2] == (True, False)


def test_two_person_approval_follows_the_decisions(idp, owner, approver, approver2, catalogue):
    client = live(idp, owner, risk_tier=RiskTier.HIGH)
    request = RequestFactory(public_id=client.registration_id, state="approved", client=client)
    Decision.objects.create(request=request, approver=approver, kind="approve")
    assert flags(client)[2] is False
    second = Decision.objects.create(request=request, approver=approver2, kind="approve")
    assert flags(client)[2] is True
    second.delete()
    assert flags(client)[2] is False


class _Statements:
    """Runs a trigger module's statements in the test's transaction (SQLite's schema editor refuses to)."""

    connection = connection

    def execute(self, sql):
        with connection.cursor() as cursor:
            cursor.execute(sql)


def test_reconcile_reports_and_repairs_a_flag_the_triggers_missed(idp, owner, catalogue):
    client = live(idp, owner, scopes=["tickets:read", "mystery:admin"])
    assert counts_reconcile().keys == 0
    flag_triggers.uninstall(_Statements())  # a write the triggers miss (they are the only writers otherwise)
    try:
        Client.objects.filter(pk=client.pk).update(uncatalogued_scopes=False)
    finally:
        flag_triggers.install(_Statements())
    drift = counts_reconcile()
    assert (drift.flags["clients"], drift.repaired) == (1, False)
    assert drift.summary()["flags:clients"] == {"keys": 1, "off_by": 1}
    assert flags(client)[0] is False  # reported, not repaired
    drift = counts_reconcile(repair=True)
    assert drift.repaired and flags(client)[0] is True
    event = AuditEvent.objects.filter(action="counts.repaired").latest("id")
    assert "flags:clients" in event.object_id
    assert counts_reconcile().keys == 0


def test_the_report_reads_the_counts_and_only_the_failing_clients(idp, owner, catalogue, django_assert_max_num_queries):
    parent = live(idp, owner, scopes=["tickets:read"])
    live(idp, owner, parent=parent, depth=1, scopes=["docs:read"], expires_at=parent.expires_at)
    live(idp, owner, scopes=["mystery:admin"])
    live(idp, owner, risk_tier=RiskTier.HIGH)
    live(idp, owner, orphaned_at=timezone.now() - timedelta(days=30))
    counts_fold()
    with CaptureQueriesContext(connection) as captured:
        results = by_key(measure_controls())
    assert (results["scope_within_catalogue"].failing, results["child_within_parent"].failing) == (1, 1)
    assert (results["human_approval_high_tier"].total, results["human_approval_high_tier"].failing) == (1, 1)
    assert (results["orphan_within_grace"].total, results["orphan_within_grace"].failing) == (1, 1)
    client_reads = [q["sql"] for q in captured.captured_queries if 'FROM "inventory_client"' in q["sql"]]
    narrowing = (
        "uncatalogued_scopes",
        "outside_parent",
        "orphaned_at",  # the orphan grace's edge hour
        "COALESCE",  # the attestation edge day
        "expires_at",  # the TTL ceiling's edge hour
    )
    for sql in client_reads:  # each read of the client table is a range of a failing-clients index
        assert any(term in sql for term in narrowing), sql
        assert "two_person_approved" not in sql  # counted in the cube
    # TTL edge hour and attestation edge week per tier (3 + 3), the orphan grace's edge hour, 2 failing sets
    assert len(client_reads) == 9
    assert len(captured.captured_queries) <= 20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_attestation_from_the_counts_equals_the_clients(idp, owner, catalogue, seed):
    """Clients within ten days of each tier's cut, some in the cut's own day and week: the counts (everyone's
    whole days, a team's whole weeks) plus the exact edge give what the control's condition selects from the
    clients, folded or not."""
    rng = random.Random(seed)
    now = timezone.now()
    teams = [TeamFactory(), TeamFactory()]
    for i in range(40):
        tier = rng.choice([RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH])
        days = {RiskTier.LOW: 180, RiskTier.MEDIUM: 90, RiskTier.HIGH: 30}[tier]
        basis = now - timedelta(days=days) + timedelta(hours=rng.uniform(-240, 240))
        kind = rng.choice(["attested", "activated"])
        live(
            idp,
            owner,
            name=f"c{i}",
            risk_tier=tier,
            activated_at=basis if kind == "activated" else basis - timedelta(days=400),
            attested_at=basis if kind == "attested" else None,
            state=rng.choice([ClientState.ACTIVE, ClientState.ACTIVE, ClientState.SUSPENDED]),
            team=rng.choice(teams),
        )
        if i == 20:
            counts_fold()
    population, overdue = ctl._attestation_conditions(ctl.Q(state__in=["active", "provisioning", "suspended"]), now)
    result = by_key(measure_controls(now=now))["attestation_current"]
    assert result.total == Client.objects.filter(population).count()
    assert result.failing == Client.objects.filter(population & overdue).count()
    assert 0 < result.failing < result.total
    for team in teams:
        result = by_key(measure_controls(now=now, team=team))["attestation_current"]
        assert result.total == Client.objects.filter(population, team=team).count()
        assert result.failing == Client.objects.filter(population & overdue, team=team).count()
    assert counts_current() == counts_recount()


def test_attestation_counts_follow_an_attestation(idp, owner, catalogue):
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    client = live(idp, owner, risk_tier=RiskTier.MEDIUM, activated_at=long_ago)
    assert (by_key(measure_controls())["attestation_current"].failing) == 1
    Client.objects.filter(pk=client.pk).update(attested_at=timezone.now())
    assert (by_key(measure_controls())["attestation_current"].failing) == 0
    counts_fold()
    assert (by_key(measure_controls())["attestation_current"].failing) == 0
    assert counts_current() == counts_recount()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_orphans_past_grace_from_the_hours_equal_the_clients(idp, owner, catalogue, settings, seed):
    """Orphans within ten hours either side of the grace cut, some in the cut's own hour, in every state: the
    counts (whole hours) plus the exact edge hour give what the control's condition selects, folded or not."""
    rng = random.Random(seed)
    now = timezone.now()
    cut = now - timedelta(hours=settings.REGISTRAR_ORPHAN_GRACE_HOURS)
    for i in range(40):
        orphaned_at = cut + timedelta(minutes=rng.uniform(-600, 600) if i % 3 else rng.uniform(-50, 50))
        live(
            idp,
            owner,
            name=f"o{i}",
            orphaned_at=orphaned_at,
            state=rng.choice([ClientState.ACTIVE, ClientState.PROVISIONING, ClientState.SUSPENDED]),
        )
        if i == 20:
            counts_fold()
    result = by_key(measure_controls(now=now))["orphan_within_grace"]
    population, failing = ctl.control_conditions("orphan_within_grace", now=now)
    assert result.total == Client.objects.filter(population).count() == 40
    assert result.failing == Client.objects.filter(population & failing).count()
    assert 0 < result.failing < result.total


def test_high_tier_approvals_are_counted_in_the_cube(idp, owner, approver, approver2, catalogue):
    """The cube keeps two_person_approved as the database sets it from the decisions: the control's figures
    follow a second approval and its withdrawal, folded or not, and the recount agrees."""
    clients = [live(idp, owner, name=f"h{i}", risk_tier=RiskTier.HIGH) for i in range(3)]
    counts_fold()
    request = RequestFactory(public_id=clients[0].registration_id, state="approved", client=clients[0])
    Decision.objects.create(request=request, approver=approver, kind="approve")
    second = Decision.objects.create(request=request, approver=approver2, kind="approve")
    result = by_key(measure_controls())["human_approval_high_tier"]
    assert (result.total, result.failing) == (3, 2)
    counts_fold()
    result = by_key(measure_controls())["human_approval_high_tier"]
    assert (result.total, result.failing) == (3, 2)
    assert counts_reconcile().keys == 0
    second.delete()
    result = by_key(measure_controls())["human_approval_high_tier"]
    assert (result.total, result.failing) == (3, 3)
    assert counts_reconcile().keys == 0
