"""Expiry with the default schedule: real ``celery worker`` + ``celery beat`` + the real IdP.

Clients are provisioned into the real oidc-provider, then given short TTLs. Beat fires ``sweep_expired`` on its
default interval (portal.celery), the sweep expires them and queues DISABLE, the worker delivers it, and delivery
calls ``client_record_idp_disabled``, which stores overshoot = IdP confirmation time − ``expires_at``.

This asserts what happens (every client expired by the schedule alone, disabled at the IdP, its overshoot
recorded and never negative); how long it takes is measured by ``bench/expiry_overshoot.py`` (p99 against the
sweep's interval), not asserted here. About 90 s: beat's first sweep comes one interval after it starts.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from inventory.choices import ClientState
from inventory.models import Client
from portal.celery import app as celery_app
from tests.agents import Agent
from tests.factories import UserFactory
from tests.idp_server import IdPProcess
from tests.provisioning import connection_for, idp_clients, register_agent
from tests.workers import CeleryWorker, RedisServer, celery_beat, database_url, wait_for, worker_env

# PostgreSQL only, for the suite's time: on SQLite (one write lock shared by the worker's threads, beat and this
# process) the same path is covered by the sweep and delivery tests without a 90 s schedule wait.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.postgres_only]

CLIENTS = 8
SPREAD_S = 16


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_beat_expires_clients_on_the_default_schedule_and_the_idp_disables_them(private_redis):
    interval = celery_app.conf.beat_schedule["sweep-expired"]["schedule"]
    # A private redis-server: a shared DB number would let another checkout's run (or its worker) take these tasks.
    sender = Celery("overshoot-sender", broker=private_redis.url)
    env = worker_env(
        database=database_url(connection.settings_dict),
        redis_url=private_redis.url,
        encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
    )
    worker = CeleryWorker("overshoot", env=env, concurrency=4)
    with IdPProcess() as idp_process:
        idp = connection_for(idp_process, name="overshoot-idp")
        owner = UserFactory(username="overshoot-owner", roles=["owner"])
        agent = Agent()
        ids = [register_agent(idp=idp, owner=owner, agent=agent, name=f"short-{n}").pk for n in range(CLIENTS)]
        try:
            worker.start()
            sender.send_task("inventory.tasks.requeue_outbox")
            wait_for(
                lambda: Client.objects.filter(pk__in=ids, state=ClientState.ACTIVE).count() == CLIENTS,
                timeout=60,
                what="clients to be provisioned",
                interval=0.5,
            )
            start = timezone.now()
            for n, pk in enumerate(ids):  # TTLs of 2 … 16 s
                Client.objects.filter(pk=pk).update(expires_at=start + timedelta(seconds=2 + n * SPREAD_S / CLIENTS))
            with celery_beat(env):
                wait_for(
                    lambda: (
                        Client.objects.filter(pk__in=ids, expiry_overshoot_seconds__isnull=False).count() == CLIENTS
                    ),
                    timeout=SPREAD_S + 2 * interval + 60,
                    what=f"every overshoot to be recorded; log: {worker.log_tail(800)}",
                    interval=1,
                )
        finally:
            worker.stop()
        client_ids = set(Client.objects.filter(pk__in=ids).values_list("idp_client_id", flat=True))
        # rfc7591 has no "disabled": disabling deletes the client at the IdP, which also revokes its tokens
        still_at_idp = client_ids & {remote["client_id"] for remote in idp_clients(idp_process)}

    rows = list(
        Client.objects.filter(pk__in=ids).values_list(
            "state", "expiry_overshoot_seconds", "idp_disabled_at", "expires_at"
        )
    )
    assert {state for state, *_ in rows} == {ClientState.EXPIRED}
    assert all(overshoot is not None and overshoot >= 0 for _, overshoot, _, _ in rows)
    assert all(disabled >= expires for _, _, disabled, expires in rows)
    assert len(client_ids) == CLIENTS and still_at_idp == set()
