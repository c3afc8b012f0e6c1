"""Celery task wrappers of the inventory (thin: they call inventory.delivery / inventory.reconcile)."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from inventory import delivery, tasks
from tests.factories import IdPFactory

pytestmark = pytest.mark.django_db


def test_deliver_task_uses_the_process_connector_cache(monkeypatch):
    seen = {}

    def fake(client_id, *, timeout=None, connectors=None):
        seen.update(client_id=client_id, connectors=connectors)
        return True

    monkeypatch.setattr(delivery, "deliver_client_outbox", fake)
    assert tasks.deliver_client_outbox.run(42) is True
    assert seen == {"client_id": 42, "connectors": tasks._connectors}


def test_deliver_task_gives_up_quietly_at_the_soft_time_limit(monkeypatch):
    def slow(client_id, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(delivery, "deliver_client_outbox", slow)
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
