"""Counts kept as clients change (inventory.counts): the trigger's deltas, the folder, reconcile and repair."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, RiskTier
from inventory.counts import CountSource, Projection, counts_current, counts_fold, counts_reconcile, counts_recount
from inventory.models import (
    Client,
    ClientAttestDayCount,
    ClientCount,
    ClientCountAllTeams,
    ClientCountDelta,
    ClientDayCountAllTeams,
    ClientExpiryCountAllTeams,
    ClientOvershootCountAllTeams,
    ClientOwnerCount,
    ClientOwnerLiveCount,
    ClientTeamCount,
)
from inventory.selectors.owners import home_tiles
from portal.models import AuditEvent
from tests.factories import ClientFactory, TeamFactory, UserFactory
from tests.migrating import StatementsOnly

pytestmark = pytest.mark.django_db


def assert_counts_equal_recount() -> None:
    assert counts_current() == counts_recount()


def test_the_triggers_exist_after_a_full_migrate():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'inventory_client'::regclass AND NOT tgisinternal"
            )
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'inventory_client'")
        names = {row[0] for row in cursor.fetchall()}
    expected = (
        {"client_count_delta", "client_count_delta_update"}
        if connection.vendor == "postgresql"
        else {"client_count_delta_insert", "client_count_delta_delete", "client_count_delta_update"}
    )
    assert expected <= names


def test_a_change_writes_one_minus_and_one_plus_delta_and_an_unrelated_update_none(idp, owner):
    client = ClientFactory(idp=idp, owner=owner)
    assert list(ClientCountDelta.objects.values_list("n", "state")) == [(1, "active")]
    Client.objects.filter(pk=client.pk).update(last_used_at=timezone.now(), name="renamed")
    assert ClientCountDelta.objects.count() == 1
    Client.objects.filter(pk=client.pk).update(state=ClientState.SUSPENDED)
    assert sorted(ClientCountDelta.objects.values_list("n", "state")) == [
        (-1, "active"),
        (1, "active"),
        (1, "suspended"),
    ]
    assert_counts_equal_recount()


def test_folding_moves_every_delta_into_the_rollups_and_the_totals_stay_equal(idp, owner):
    team = TeamFactory()
    now = timezone.now()
    clients = [
        ClientFactory(
            idp=idp, owner=owner, team=team if i % 2 else None, risk_tier=tier, expires_at=now + timedelta(hours=i)
        )
        for i, tier in enumerate([RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH, RiskTier.LOW])
    ]
    Client.objects.filter(pk=clients[0].pk).update(state=ClientState.RETIRED, ended_at=now)
    Client.objects.filter(pk=clients[1].pk).update(orphaned_at=now, purpose="")
    before = counts_current()
    assert counts_fold(batch=3) == 8  # 4 created, then 2 changes of 2 deltas each
    assert ClientCountDelta.objects.count() == 0
    assert counts_current() == before == counts_recount()
    live = sum(ClientCount.objects.filter(state__in=["active"]).values_list("n", flat=True))
    assert live == 3
    assert sum(ClientOwnerCount.objects.filter(owner_id=owner.pk).values_list("n", flat=True)) == 4


def test_reconcile_reports_drift_and_repairs_it_with_one_audit_event(idp, owner):
    ClientFactory.create_batch(3, idp=idp, owner=owner)
    counts_fold()
    assert counts_reconcile().keys == 0
    ClientCount.objects.update(n=7)  # drift: what a lost delta would look like
    drift = counts_reconcile()
    assert drift.keys == 1 and drift.clients == 4 and not drift.repaired
    assert not AuditEvent.objects.filter(action="counts.repaired").exists()
    drift = counts_reconcile(repair=True)
    assert drift.repaired
    assert AuditEvent.objects.filter(action="counts.repaired").count() == 1
    assert counts_reconcile().keys == 0
    assert_counts_equal_recount()


def test_reconcile_counts_command_reports_and_repairs(idp, owner, capsys):
    ClientFactory.create_batch(2, idp=idp, owner=owner)
    call_command("fold_counts")
    ClientOwnerCount.objects.update(n=5)
    with pytest.raises(SystemExit) as exited:
        call_command("reconcile_counts")
    assert exited.value.code == 1
    assert "drift" in capsys.readouterr().out
    call_command("reconcile_counts", "--repair")
    call_command("reconcile_counts")
    assert "no drift" in capsys.readouterr().out


def test_the_security_home_tiles_come_from_the_counts(idp, owner, security_user, django_assert_num_queries):
    from portal.roles import roles_of

    now = timezone.now()
    ClientFactory.create_batch(2, idp=idp, owner=owner)
    ClientFactory(idp=idp, owner=owner, orphaned_at=now, managed=False, sync_failed=True)
    ClientFactory(idp=idp, owner=owner, state=ClientState.RETIRED, orphaned_at=now, managed=False)  # not live
    counts_fold()
    ClientFactory(idp=idp, owner=owner, sync_failed=True)  # a delta not folded yet
    roles = roles_of(security_user)
    with django_assert_num_queries(1):
        tiles = home_tiles(security_user, roles)
    assert tiles == {"live_clients": 4, "orphaned": 1, "unmanaged": 1, "sync_failed": 2}


# --- all-teams projections (inventory.counts.Projection) ----------------------------------------------------------


def test_projections_are_the_rollups_summed_over_the_teams(idp, owner):
    first, second = TeamFactory(), TeamFactory()
    for i in range(6):
        ClientFactory(idp=idp, owner=owner, team=(first, second, None)[i % 3], risk_tier=RiskTier.HIGH)
    retired = ClientFactory(idp=idp, owner=owner, team=first)
    Client.objects.filter(pk=retired.pk).update(state=ClientState.RETIRED, ended_at=timezone.now())
    counts_fold()
    current = counts_current()
    # three teams' cube rows (first, second, none) collapse into one all-teams row per signature
    high_active = [k for k in current["cube_all"] if k[0] == "active" and k[1] == "high"]
    assert [current["cube_all"][k] for k in high_active] == [6]
    assert {k: n for k, n in current["team"].items() if k[1] == "active"} == {
        (first.pk, "active"): 2,
        (second.pk, "active"): 2,
        (0, "active"): 2,
    }
    # the owner projection counts live clients only: the retired one is not there
    assert current["owner_live"] == {(owner.pk,): 6}
    assert ClientOwnerLiveCount.objects.get(owner_id=owner.pk).n == 6
    assert_counts_equal_recount()


def test_drift_in_a_projection_is_reported_and_repaired(idp, owner):
    ClientFactory.create_batch(3, idp=idp, owner=owner, team=TeamFactory())
    counts_fold()
    ClientCountAllTeams.objects.update(n=1)  # the rollup is right, its projection is not
    drift = counts_reconcile()
    assert drift.summary() == {"cube_all": {"keys": 1, "off_by": 2}}
    assert counts_reconcile(repair=True).repaired
    assert ClientCountAllTeams.objects.get().n == 3
    assert counts_reconcile().keys == 0


def test_the_migration_fills_the_projections_as_the_folder_keeps_them(idp, owner):
    """0021 fills each projection from its rollup's folded rows with SQL of its own: it must agree with the
    Projection definitions the folder uses."""
    for i in range(4):
        ClientFactory(idp=idp, owner=owner, team=TeamFactory() if i % 2 else None, expires_at=timezone.now())
    overshot = ClientFactory(idp=idp, owner=owner)
    Client.objects.filter(pk=overshot.pk).update(
        state=ClientState.EXPIRED, ended_at=timezone.now(), expiry_overshoot_seconds=42.0
    )
    counts_fold()
    expected = counts_current()
    projections = [
        ClientCountAllTeams,
        ClientTeamCount,
        ClientOwnerLiveCount,
        ClientExpiryCountAllTeams,
        ClientDayCountAllTeams,
        ClientOvershootCountAllTeams,
    ]
    for model in projections:
        model.objects.all().delete()
    migration = importlib.import_module("inventory.migrations.0021_count_projections")
    migration.fill(None, StatementsOnly())
    assert counts_current() == expected
    assert counts_reconcile().keys == 0


def test_the_migration_fills_the_attestation_days_from_the_clients_less_the_unfolded_deltas(idp, owner):
    """0028 fills everyone's attestation days from the clients, less the deltas the folder has not folded yet
    (it adds them afterwards): the counts then equal a recount, folded or not."""
    now = timezone.now()
    for i in range(6):
        ClientFactory(
            idp=idp, owner=owner, state=ClientState.ACTIVE, activated_at=now - timedelta(days=40 * i, hours=i)
        )
    counts_fold()
    for i in range(3):  # these stay unfolded: in the clients and in the deltas
        ClientFactory(idp=idp, owner=owner, state=ClientState.ACTIVE, attested_at=now - timedelta(days=3 * i))
    ClientAttestDayCount.objects.all().delete()
    migration = importlib.import_module("inventory.migrations.0028_attestation_days_all_teams")
    migration.fill(None, StatementsOnly())
    assert sum(ClientAttestDayCount.objects.values_list("n", flat=True)) == 6
    assert counts_reconcile().keys == 0
    counts_fold()
    assert sum(ClientAttestDayCount.objects.values_list("n", flat=True)) == 9
    assert counts_reconcile().keys == 0


def test_a_projection_must_be_a_subset_of_its_rollup():
    with pytest.raises(ValueError, match="subset"):
        CountSource(
            name="bad",
            delta=ClientCountDelta,
            delta_columns=("n",),
            rollups={"cube": (ClientCount, ("team_id", "state"))},
            tally=lambda rows: {},
            recount=dict,
            normal_key=lambda name, key: key,
            projections={"cube_all": Projection(ClientCountAllTeams, ("risk_tier",), "cube")},
        )


def test_top_owners_of_every_team_follow_the_unfolded_deltas(idp):
    """Everyone's top owners come from the top of the owner projection plus the owners with unfolded deltas: a
    change not folded yet can lift an owner from far below the folded top, or drop one out of it."""
    from inventory.selectors.counts import top_owners

    owners = [UserFactory() for _ in range(6)]
    for owner, n in zip(owners, (5, 4, 3, 2, 2, 1), strict=True):
        ClientFactory.create_batch(n, idp=idp, owner=owner, team=TeamFactory())
    counts_fold()
    first, second, _third, _fourth, _fifth, last = owners
    assert top_owners(limit=2) == [(first.pk, 5), (second.pk, 4)]
    # not folded: the first owner loses three clients, the last (far below the folded top 2) gains six
    Client.objects.filter(pk__in=Client.objects.filter(owner=first).values("pk")[:3]).update(
        state=ClientState.RETIRED, ended_at=timezone.now()
    )
    ClientFactory.create_batch(6, idp=idp, owner=last)
    assert ClientCountDelta.objects.exists()
    expected = sorted(
        ((o.pk, Client.objects.filter(owner=o, state__in=LIVE_STATES).count()) for o in owners),
        key=lambda row: (-row[1], row[0]),
    )
    assert top_owners(limit=3) == expected[:3] == [(last.pk, 7), (second.pk, 4), (owners[2].pk, 3)]
    assert top_owners(limit=10) == [row for row in expected if row[1]]
    counts_fold()
    assert top_owners(limit=3) == expected[:3]
    # one team's top owners still read the team's rows of the owner rollup
    team_id = Client.objects.filter(owner=second).values_list("team_id", flat=True).first()
    assert top_owners(team_id=team_id, limit=5) == [(second.pk, 4)]
