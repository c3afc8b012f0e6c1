"""Reads on a replica, against a real PostgreSQL streaming standby.

The fixture starts a primary of its own (``initdb``, the fault suite's :class:`PostgresServer`), loads the test
database's schema into it (``pg_dump``: migrating from scratch would take half a minute), takes a
``pg_basebackup -R`` of it into a second data directory and starts that as a hot standby on another port, both with
``log_statement=all``. This process's ``default`` connection then points at the primary and a ``replica`` alias at
the standby, with the router and the middleware of ``DATABASE_REPLICA_URL``. What reached which server is read
from the servers' own logs, not from Django.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from portal import dbrouter
from portal.dbrouter import REPLICA
from tests.faults.harness import PostgresServer, _pg_bin, using_server

# The module's fixture adds the replica alias before each test's database set-up, which then admits it; the test
# case's flush at the end of each test empties the primary (``default`` points there) and skips the replica (a
# test mirror for Django).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.xdist_group("replica"),
    pytest.mark.django_db(transaction=True, databases=["default", REPLICA]),
]

DATABASE = "registrar"
LOGGED = " -c log_statement=all -c log_min_duration_statement=-1"


@dataclass
class Pair:
    primary: PostgresServer
    standby: PostgresServer

    def url(self, server: PostgresServer) -> str:
        return f"postgres://postgres@127.0.0.1:{server.port}/{DATABASE}"

    def sql(self, server: PostgresServer, statement: str):
        with psycopg.connect(self.url(server), autocommit=True) as conn:
            return conn.execute(statement).fetchone()

    def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        target = self.sql(self.primary, "SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql(self.standby, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0]:
                return
            time.sleep(0.05)
        raise AssertionError(f"the standby did not replay up to {target} in {timeout} s:\n{self.standby.log_tail()}")


class LogMark:
    """What a server logged from now on."""

    def __init__(self, server: PostgresServer) -> None:
        self.path: Path = server.log
        self.offset = self.path.stat().st_size

    def statements(self) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        lines = [line for line in text.splitlines() if "statement: " in line or "execute " in line]
        # the router's lag check: the primary's WAL position, the standby's replay position
        return [line for line in lines if "pg_is_in_recovery" not in line and "pg_current_wal_flush_lsn" not in line]


def client_reads(lines: list[str]) -> list[str]:
    return [line for line in lines if 'FROM "inventory_client"' in line]


def counts_reads(lines: list[str]) -> list[str]:
    return [line for line in lines if "inventory_clientcount" in line]


def _load_schema(source: dict, primary: PostgresServer) -> None:
    """The test database (schema and rows) into the primary's ``registrar`` database."""
    primary._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", DATABASE)
    dump = subprocess.run(
        [_pg_bin("pg_dump"), "--no-owner", "--no-privileges", "-h", str(source["HOST"] or "127.0.0.1")]
        + ["-p", str(source["PORT"] or 5432), "-U", str(source["USER"] or "postgres"), str(source["NAME"])],
        capture_output=True,
        timeout=120,
        check=True,
    )
    subprocess.run(
        [_pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
        + ["-d", DATABASE],
        input=dump.stdout,
        capture_output=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def pair(django_db_setup, django_db_blocker) -> Iterator[Pair]:
    primary, standby = PostgresServer(), PostgresServer()
    primary.extra_options = standby.extra_options = LOGGED
    try:
        primary.init()
        primary.start()  # wal_level=replica and initdb's replication lines in pg_hba.conf are PostgreSQL's defaults
        with django_db_blocker.unblock():
            _load_schema(dict(connections[DEFAULT_DB_ALIAS].settings_dict), primary)
        standby._run(
            _pg_bin("pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(standby.data)),
            *("-R", "-X", "stream", "-c", "fast", "--no-sync"),
            timeout=120,
        )
        standby.start()
        pair = Pair(primary, standby)
        assert pair.sql(standby, "SELECT pg_is_in_recovery()")[0] is True
        with django_db_blocker.unblock(), using_server(pair.url(primary)):
            databases = connections.settings
            databases[REPLICA] = {
                **connections[DEFAULT_DB_ALIAS].settings_dict,
                "PORT": str(standby.port),
                "TEST": {**connections[DEFAULT_DB_ALIAS].settings_dict["TEST"], "MIRROR": DEFAULT_DB_ALIAS},
                "OPTIONS": {**connections[DEFAULT_DB_ALIAS].settings_dict.get("OPTIONS", {}), "connect_timeout": 2},
            }
            try:
                yield pair
            finally:
                connections[REPLICA].close()
                del connections[REPLICA]
                databases.pop(REPLICA, None)
    finally:
        standby.destroy()
        primary.destroy()


@pytest.fixture
def routed(pair, settings) -> Pair:
    settings.DATABASE_ROUTERS = ["portal.dbrouter.ReplicaRouter"]
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(
        middleware.index("django.contrib.sessions.middleware.SessionMiddleware"),
        "portal.dbrouter.ReadYourWritesMiddleware",
    )
    settings.MIDDLEWARE = middleware
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0
    dbrouter.health.reset()
    yield pair
    dbrouter.health.reset()
    if not pair.standby.running():
        pair.standby.start()
    pair.sql(pair.standby, "SELECT pg_wal_replay_resume()")


@pytest.fixture
def estate(routed):
    from django.contrib.auth.models import Group

    from tests.factories import ClientFactory, TeamFactory, UserFactory

    Group.objects.get_or_create(name="security")
    suffix = str(time.monotonic_ns())[-6:]
    security = UserFactory(username=f"ciso-{suffix}", roles=["security"])
    other = UserFactory(username=f"auditor-{suffix}", roles=["security"])
    team = TeamFactory(name=f"Standby {suffix}", slug=f"standby-{suffix}")
    clients = [ClientFactory(name=f"standby-agent-{suffix}-{i}", team=team) for i in range(3)]
    routed.caught_up()
    return security, other, clients


def test_dashboard_and_search_read_the_standby(routed, estate, client):
    security, _other, clients = estate
    client.force_login(security)
    routed.caught_up()

    on_standby, on_primary = LogMark(routed.standby), LogMark(routed.primary)
    response = client.get("/dashboards/")
    assert response.status_code == 200
    assert counts_reads(on_standby.statements()), routed.standby.log_tail()
    assert not counts_reads(on_primary.statements())

    on_standby, on_primary = LogMark(routed.standby), LogMark(routed.primary)
    response = client.get(f"/inventory/?q={clients[0].name[:-2]}")
    assert response.status_code == 200
    assert all(c.name in response.content.decode() for c in clients)
    assert client_reads(on_standby.statements())
    assert not client_reads(on_primary.statements())
    # The session and the user were read from the primary, before the view's scope began.
    assert any("django_session" in line for line in on_primary.statements())


def test_a_write_is_read_back_from_the_primary_and_lag_falls_back(routed, estate, client, settings):
    from django.test import Client as HttpClient

    settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS = 1
    security, other, clients = estate
    target = clients[1]
    client.force_login(security)
    colleague = HttpClient()
    colleague.force_login(other)
    routed.caught_up()
    routed.sql(routed.standby, "SELECT pg_wal_replay_pause()")  # the standby stops applying what it receives

    response = client.post(
        f"/api/v1/clients/{target.registration_id}/hold/", {"reason": "incident 7"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["state"] == "suspended"
    held = f"SELECT state FROM inventory_client WHERE registration_id = '{target.registration_id}'"
    assert routed.sql(routed.standby, held)[0] == "active"  # not there yet

    # The writer reads their own write: from the primary.
    on_standby = LogMark(routed.standby)
    response = client.get(f"/api/v1/clients/{target.registration_id}/")
    assert response.status_code == 200 and response.json()["state"] == "suspended"
    assert not client_reads(on_standby.statements())

    # Once the standby is more than the bound behind, nobody reads it.
    deadline = time.monotonic() + 15
    while dbrouter.health.measure() <= 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dbrouter.health.measure() > 1
    dbrouter.health.reset()
    on_standby = LogMark(routed.standby)
    response = colleague.get(f"/api/v1/clients/{target.registration_id}/")
    assert response.status_code == 200 and response.json()["state"] == "suspended"
    assert not client_reads(on_standby.statements())

    # Caught up again: the colleague reads the standby, and sees the hold there.
    routed.sql(routed.standby, "SELECT pg_wal_replay_resume()")
    routed.caught_up()
    dbrouter.health.reset()
    on_standby = LogMark(routed.standby)
    response = colleague.get(f"/api/v1/clients/{target.registration_id}/")
    assert response.status_code == 200 and response.json()["state"] == "suspended"
    assert client_reads(on_standby.statements())


def test_a_standby_cut_off_from_its_primary_is_not_taken_for_current(routed, estate, client, settings):
    """A partition the WAL receiver has not noticed yet (``wal_receiver_timeout``, 60 s): the standby still
    streams, as far as it knows, and has replayed all it received. The primary's position says otherwise."""
    import os
    import signal

    from django.test import Client as HttpClient

    settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS = 1
    security, other, clients = estate
    colleague = HttpClient()
    colleague.force_login(other)
    assert dbrouter.health.measure() == 0.0
    (walsender,) = routed.sql(routed.primary, "SELECT pid FROM pg_stat_replication")
    os.kill(walsender, signal.SIGSTOP)  # the primary stops sending WAL; neither side times out for a minute
    try:
        client.force_login(security)
        response = client.post(
            f"/api/v1/clients/{clients[0].registration_id}/hold/",
            {"reason": "incident 8"},
            content_type="application/json",
        )
        assert response.status_code == 200
        # what the standby says of itself: a live receiver that has replayed everything it received
        receiving, replayed_all = routed.sql(
            routed.standby,
            "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'), "
            "pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()",
        )
        assert receiving and replayed_all
        deadline = time.monotonic() + 15
        while dbrouter.health.measure() <= 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dbrouter.health.measure() > 1
        dbrouter.health.reset()
        on_standby = LogMark(routed.standby)
        response = colleague.get(f"/api/v1/clients/{clients[0].registration_id}/")
        assert response.status_code == 200 and response.json()["state"] == "suspended"
        assert not client_reads(on_standby.statements())
    finally:
        os.kill(walsender, signal.SIGCONT)
    routed.caught_up()
    assert dbrouter.health.measure() == 0.0


def test_a_stopped_standby_falls_back_to_the_primary(routed, estate, client, caplog, monkeypatch):
    security, _other, _clients = estate
    client.force_login(security)
    assert client.get("/dashboards/").status_code == 200  # the replica connection is open, the check said ok
    assert dbrouter.health.ok
    caplog.set_level(logging.WARNING)

    routed.standby.stop()
    on_primary = LogMark(routed.primary)
    for _ in range(3):
        response = client.get("/dashboards/")
        assert response.status_code == 200
    assert counts_reads(on_primary.statements())
    warnings = [r.getMessage() for r in caplog.records if "replica_" in r.getMessage()]
    assert len(warnings) == 1 and "replica_unusable" in warnings[0], warnings
    assert not [r for r in caplog.records if "database_unavailable" in r.getMessage()]

    routed.standby.start()
    monkeypatch.setattr(dbrouter.health, "_next_check", 0.0)  # instead of waiting out retry_after_failure
    on_standby = LogMark(routed.standby)
    assert client.get("/dashboards/").status_code == 200
    assert counts_reads(on_standby.statements())
    warnings = [r.getMessage() for r in caplog.records if "replica_" in r.getMessage()]
    assert len(warnings) == 2 and "replica_usable" in warnings[1], warnings
