"""Counts kept as clients change (inventory.counts): the trigger's deltas, the folder, reconcile and repair."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from inventory.choices import ClientState, RiskTier
from inventory.counts import counts_current, counts_fold, counts_reconcile, counts_recount
from inventory.models import Client, ClientCount, ClientCountDelta, ClientOwnerCount
from inventory.selectors.owners import home_tiles
from portal.models import AuditEvent
from tests.factories import ClientFactory, TeamFactory

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
