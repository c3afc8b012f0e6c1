"""Sweeps: what they transition, exactly once under concurrency, orphan grace periods, digests."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory import hooks
from inventory.choices import ClientState, OutboxOperation
from inventory.models import Client, OutboxEntry
from inventory.sweeps import sweep_expired, sweep_orphans, sweep_run, sweeps_available
from portal.audit import verify_chain
from portal.models import AuditEvent
from tests.factories import ClientFactory, IdPFactory, TeamFactory, UserFactory

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def past(**kw):
    return NOW - dt.timedelta(**kw)


def future(**kw):
    return NOW + dt.timedelta(**kw)


@pytest.mark.django_db
def test_sweep_expired_expires_due_clients_in_batches():
    due = [ClientFactory(expires_at=past(minutes=i + 1)) for i in range(7)]
    suspended_due = ClientFactory(state=ClientState.SUSPENDED, expires_at=past(minutes=1))
    not_due = ClientFactory(expires_at=future(minutes=1))
    ended = ClientFactory(state=ClientState.RETIRED, expires_at=past(days=1))
    result = sweep_expired(now=NOW, batch_size=3)
    assert result.counts["expired"] == 8 and result.batches == 3
    assert set(Client.objects.filter(pk__in=[c.pk for c in [*due, suspended_due]]).values_list("state", flat=True)) == {
        ClientState.EXPIRED
    }
    assert Client.objects.get(pk=not_due.pk).state == ClientState.ACTIVE
    assert Client.objects.get(pk=ended.pk).state == ClientState.RETIRED
    assert Counter(OutboxEntry.objects.values_list("operation", flat=True)) == {OutboxOperation.DISABLE: 8}
    assert AuditEvent.objects.filter(action="client.expired").count() == 8
    assert Client.objects.get(pk=due[0].pk).ended_at == NOW
    assert verify_chain()[1] is None
    assert sweep_expired(now=NOW).total == 0  # idempotent


@pytest.mark.django_db
def test_sweep_expired_retires_descendants_and_stranded_children():
    parent = ClientFactory(expires_at=past(minutes=1))
    child = ClientFactory(parent=parent, depth=1, expires_at=future(hours=1))
    old_parent = ClientFactory(state=ClientState.RETIRED, expires_at=past(days=1))
    stranded = ClientFactory(parent=old_parent, depth=1, expires_at=future(hours=1))
    result = sweep_expired(now=NOW)
    assert result.counts == {"expired": 1, "cascaded": 1, "lineage": 1}
    assert Client.objects.get(pk=child.pk).state == ClientState.RETIRED
    assert Client.objects.get(pk=stranded.pk).state == ClientState.RETIRED
    assert AuditEvent.objects.filter(action="client.retired.cascade").count() == 2


@pytest.mark.django_db
def test_lineage_pass_selects_only_spawned_clients_by_their_parent_column():
    """The lineage pass says ``parent_id IS NOT NULL`` so the database can start from the parent index (the few
    spawned clients) rather than walk every client in key order; the join alone would not let it."""
    ClientFactory(expires_at=future(hours=1))
    with CaptureQueriesContext(connection) as captured:
        sweep_expired(now=NOW)
    lineage = [q["sql"] for q in captured.captured_queries if "INNER JOIN" in q["sql"] and "parent_id" in q["sql"]]
    assert len(lineage) == 1
    assert '"inventory_client"."parent_id" IS NOT NULL' in lineage[0]


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_transition_each_client_exactly_once():
    idp = IdPFactory()
    owner = UserFactory()
    clients = [ClientFactory(idp=idp, owner=owner, expires_at=past(seconds=i + 1)) for i in range(120)]
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(sweep_expired(now=NOW, batch_size=7))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own DB connection

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.counts.get("expired", 0) for r in results) == 120
    assert all(r.counts.get("expired", 0) > 0 for r in results) or len(results) == 2
    assert set(Client.objects.values_list("state", flat=True)) == {ClientState.EXPIRED}
    per_client = Counter(AuditEvent.objects.filter(action="client.expired").values_list("object_id", flat=True))
    assert per_client == {c.registration_id: 1 for c in clients}
    assert Counter(OutboxEntry.objects.values_list("client_id", flat=True)) == {c.pk: 1 for c in clients}
    assert verify_chain()[1] is None


@pytest.mark.django_db
@override_settings(REGISTRAR_ORPHAN_GRACE_HOURS=72, REGISTRAR_ORPHAN_RETIRE_DAYS=30)
def test_orphan_flow_notifies_then_suspends_then_retires():
    manager = UserFactory(username="mgr", email="mgr@example.com")
    team = TeamFactory(manager=manager, notify_email="platform@example.com")
    leaver = UserFactory(username="leaver", is_active=False, deactivated_at=past(hours=1))
    clients = [ClientFactory(owner=leaver, team=team, expires_at=future(days=90)) for _ in range(3)]
    kept = ClientFactory(team=team, expires_at=future(days=90))  # owner still here

    first = sweep_orphans(now=NOW)
    assert first.counts == {"orphaned": 3}
    assert set(Client.objects.filter(owner=leaver).values_list("state", flat=True)) == {ClientState.ACTIVE}
    assert Client.objects.get(pk=kept.pk).orphaned_at is None
    assert sorted(m.to[0] for m in mail.outbox) == ["mgr@example.com", "platform@example.com"]
    assert all(clients[0].registration_id in m.body for m in mail.outbox)

    assert sweep_orphans(now=NOW + dt.timedelta(hours=71)).total == 0  # still in grace
    second = sweep_orphans(now=NOW + dt.timedelta(hours=73))
    assert second.counts == {"suspended": 3}
    assert set(Client.objects.filter(owner=leaver).values_list("state", flat=True)) == {ClientState.SUSPENDED}
    assert sweep_orphans(now=NOW + dt.timedelta(hours=72, days=29)).total == 0
    third = sweep_orphans(now=NOW + dt.timedelta(hours=73, days=30))
    assert third.counts == {"retired": 3}
    assert set(Client.objects.filter(owner=leaver).values_list("state", flat=True)) == {ClientState.RETIRED}
    actions = Counter(AuditEvent.objects.values_list("action", flat=True))
    assert actions == {"client.orphaned": 3, "client.suspend.orphan": 3, "client.retire.orphan": 3}
    assert len(mail.outbox) == 2  # team notified once, not on every run


@pytest.mark.django_db
def test_sweep_command_runs_each_sweep(capsys):
    ClientFactory(expires_at=timezone.now() - dt.timedelta(minutes=5))
    call_command("sweep", "expired", "--batch-size", "10")
    assert "sweep=expired expired=1" in capsys.readouterr().out
    for which in ("orphans", "lapsed"):
        call_command("sweep", which)
        assert f"sweep={which}" in capsys.readouterr().out


@pytest.mark.django_db
def test_lapsed_requests_are_swept_by_the_sweep_approvals_registered(settings):
    from approvals.inventory_hooks import sweep_lapsed
    from approvals.models import RegistrationRequest
    from tests.factories import RequestFactory

    settings.REGISTRAR_REQUEST_LAPSE_DAYS = 14
    old, fresh = RequestFactory(), RequestFactory()
    RegistrationRequest.objects.filter(pk=old.pk).update(created_at=past(days=15))
    RegistrationRequest.objects.filter(pk=fresh.pk).update(created_at=past(days=13))

    assert sweeps_available()["lapsed"] is sweep_lapsed  # registered by ApprovalsConfig.ready()
    assert sweep_run("lapsed", now=NOW).counts == {"lapsed": 1}
    assert dict(RegistrationRequest.objects.values_list("pk", "state")) == {old.pk: "lapsed", fresh.pk: "pending"}


def test_inventory_on_its_own_has_only_its_own_sweeps():
    saved = hooks.reset_for_tests()
    try:
        assert sorted(sweeps_available()) == ["expired", "orphans"]  # "stale" is the inactivity rule now
        with pytest.raises(KeyError):
            sweep_run("lapsed")
    finally:
        hooks.restore(saved)
    assert {"lapsed", "unauthorized"} <= set(sweeps_available())


@pytest.mark.django_db
def test_celery_tasks_are_registered_with_the_beat_names():
    import inventory.tasks  # noqa: F401
    from portal.celery import app

    for name in ("sweep_expired", "sweep_orphans", "lifecycle_policies", "notify_expiring"):
        assert f"inventory.tasks.{name}" in app.tasks
    assert "inventory.tasks.sweep_stale" not in app.tasks
    beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "inventory.tasks.lifecycle_policies" in beat and "inventory.tasks.sweep_stale" not in beat
    assert app.tasks["inventory.tasks.sweep_expired"].apply().get() == {}
