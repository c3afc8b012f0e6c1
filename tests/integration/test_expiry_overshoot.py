"""Expiry overshoot with the default schedule: real ``celery worker`` + ``celery beat`` + the real IdP.

Clients are provisioned into the real oidc-provider, then given short TTLs spread over ~75 s. Beat
fires ``sweep_expired`` on its default 60 s interval (portal.celery), the sweep expires them and queues
DISABLE, the worker delivers it, and delivery calls ``client_record_idp_disabled``, which stores
overshoot = IdP confirmation time − ``expires_at``. Goal (issue 6): p99 ≤ 90 s. Takes about 2.5 minutes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from inventory.choices import ClientState
from inventory.models import Client
from tests.agents import Agent
from tests.factories import UserFactory
from tests.idp_server import IdPProcess
from tests.provisioning import connection_for, register_agent
from tests.workers import CELERY, ROOT, CeleryWorker, RedisServer, database_url, wait_for, worker_env

# The overshoot goal is the production database's (PostgreSQL): on SQLite, the demo's single-writer file, the
# worker's four threads, beat and this process queue for one write lock, and a sweep that waits too long for it
# is caught by the next one, a minute later (p99 119.9 s there under a loaded CI machine, 60 s expected).
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.postgres_only]

CLIENTS = 40
SPREAD_S = 75
GOAL_P99_S = 90.0


@contextlib.contextmanager
def celery_beat(env: dict[str, str]):
    """``celery -A portal beat`` with the project's default schedule, in its own session."""
    workdir = Path(tempfile.mkdtemp(prefix="registrar-beat-"))
    log = (workdir / "beat.log").open("wb")
    process = subprocess.Popen(
        [str(CELERY), "-A", "portal", "beat", "-l", "info", "-s", str(workdir / "schedule"), "--pidfile="],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_expiry_overshoot_p99_with_the_default_schedule(private_redis):
    # A private redis-server: a shared DB number would let another checkout's run (or its worker) take these tasks.
    redis_url = private_redis.url
    sender = Celery("overshoot-sender", broker=redis_url)
    env = worker_env(
        database=database_url(connection.settings_dict),
        redis_url=redis_url,
        encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
    )
    worker = CeleryWorker("overshoot", env=env, concurrency=4)
    with IdPProcess() as idp_process:
        idp = connection_for(idp_process, name="overshoot-idp")
        owner = UserFactory(username="overshoot-owner", roles=["owner"])
        agent = Agent()
        clients = [register_agent(idp=idp, owner=owner, agent=agent, name=f"short-{n}") for n in range(CLIENTS)]
        ids = [c.pk for c in clients]
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
            for n, pk in enumerate(ids):  # TTLs of 5 … 80 s
                Client.objects.filter(pk=pk).update(expires_at=start + timedelta(seconds=5 + n * SPREAD_S / CLIENTS))
            with celery_beat(env):
                wait_for(
                    lambda: (
                        Client.objects.filter(pk__in=ids, expiry_overshoot_seconds__isnull=False).count() == CLIENTS
                    ),
                    timeout=SPREAD_S + 60 + 60,
                    what=f"every overshoot to be recorded; log: {worker.log_tail(800)}",
                    interval=1,
                )
        finally:
            worker.stop()

    rows = list(
        Client.objects.filter(pk__in=ids).values_list(
            "state", "expiry_overshoot_seconds", "idp_disabled_at", "expires_at"
        )
    )
    assert {state for state, *_ in rows} == {ClientState.EXPIRED}
    overshoots = [o for _, o, _, _ in rows]
    assert all(disabled >= expires for _, _, disabled, expires in rows)
    print(
        f"expiry overshoot: n={len(overshoots)} median={statistics.median(overshoots):.1f}s "
        f"p99={p99(overshoots):.1f}s max={max(overshoots):.1f}s"
    )
    assert p99(overshoots) <= GOAL_P99_S
