"""Celery task wrappers of the inventory (thin: they call inventory.outbox / inventory.reconcile / inventory.sweeps)."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from inventory import tasks
from inventory.outbox import deliver
from tests.factories import IdPFactory

pytestmark = pytest.mark.django_db


def test_deliver_task_uses_the_process_connector_cache(monkeypatch):
    seen = {}

    def fake(client_id, *, timeout=None, connectors=None):
        seen.update(client_id=client_id, connectors=connectors)
        return True

    monkeypatch.setattr(deliver, "deliver_client_outbox", fake)
    assert tasks.deliver_client_outbox.run(42) is True
    assert seen == {"client_id": 42, "connectors": tasks._connectors}


def test_deliver_task_gives_up_quietly_at_the_soft_time_limit(monkeypatch):
    def slow(client_id, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(deliver, "deliver_client_outbox", slow)
    assert tasks.deliver_client_outbox.run(7) is False  # the lease runs out; requeue retries it


def test_every_task_has_time_limits():
    for task in (tasks.deliver_client_outbox, tasks.requeue_outbox, tasks.reconcile_idp, tasks.reconcile_all):
        assert task.soft_time_limit and task.time_limit and task.soft_time_limit < task.time_limit


def test_reconcile_all_fans_out_to_enabled_connections(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(tasks.reconcile_idp, "delay", sent.append)
    on = IdPFactory(name="on")
    IdPFactory(name="off", enabled=False)
    assert tasks.reconcile_all() == 1
    assert sent == [on.pk]


def test_reconcile_task_skips_missing_or_disabled_connections():
    off = IdPFactory(name="off", enabled=False)
    assert tasks.reconcile_idp.run(off.pk) == {}
    assert tasks.reconcile_idp.run(999_999) == {}
    dry = IdPFactory(name="dry")
    assert tasks.reconcile_idp.run(dry.pk)["is_empty"] is True


@pytest.mark.django_db
def test_refresh_report_snapshots_keeps_the_framework_report_warm(settings, idp):
    from django.core.cache import cache

    from inventory.selectors import cached_report
    from inventory.tasks import refresh_report_snapshots
    from tests.factories import ClientFactory

    settings.REGISTRAR_REPORT_CACHE_SECONDS = 60
    cache.clear()
    ClientFactory(idp=idp)
    assert refresh_report_snapshots() == ["frameworks"]
    assert cache.get("registrar:report:dashboard") is None  # the dashboard reads the counts: no snapshot
    live = {r.control.key: r.total for r in cache.get("registrar:report:frameworks")["controls"]}["owner_bound"]
    assert live == 1
    ClientFactory(idp=idp)
    # a page view reads the snapshot without computing anything...
    report = cached_report("frameworks", lambda: pytest.fail("computed on a page view"))
    assert {r.control.key: r.total for r in report["controls"]}["owner_bound"] == 1
    # ...and the next beat picks up the change
    refresh_report_snapshots()
    report = cache.get("registrar:report:frameworks")
    assert {r.control.key: r.total for r in report["controls"]}["owner_bound"] == 2


@pytest.mark.django_db
def test_refresh_report_snapshots_does_nothing_when_caching_is_off(settings):
    from django.core.cache import cache

    from inventory.tasks import refresh_report_snapshots

    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0
    cache.clear()
    assert refresh_report_snapshots() == []
    assert cache.get("registrar:report:frameworks") is None


def test_every_beat_task_exists_and_lives_in_the_module_its_name_says():
    from portal.celery import app

    app.loader.import_default_modules()
    assert app.conf.beat_schedule
    for entry in app.conf.beat_schedule.values():
        task = app.tasks[entry["task"]]  # KeyError: beat would send a task no worker knows
        assert f"{task.run.__module__}.{task.run.__name__}" == entry["task"]
