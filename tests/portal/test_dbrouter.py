"""Reads on a replica (portal.dbrouter): the router's decisions, without a standby.

The first part asks the router directly (any database). The second serves pages with a ``replica`` alias that
reads the test database through a connection of its own (what ``DATABASES['replica']['TEST']['MIRROR']`` does),
so each query is seen on the alias it went to: which requests read the replica, which never do. A real standby
(``pg_basebackup -R``) is in test_replica_standby.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.test.utils import CaptureQueriesContext

from inventory.models import Client, Team
from portal import dbrouter
from portal.dbrouter import REPLICA, ReplicaRouter, lag_seconds, parse_lsn
from tests.factories import ClientFactory, TeamFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]
ROUTER = ReplicaRouter()


def _ensure_connection(connection) -> None:
    """BaseDatabaseWrapper.ensure_connection, for the alias the ``mirror`` fixture creates: pytest-django and
    Django's test case replace that method on the class to refuse aliases a test did not declare, and this one
    cannot be declared (pytest-django checks declared aliases against the settings before any fixture runs)."""
    if connection.connection is None:
        with connection.wrap_database_errors:
            connection.connect()


@pytest.fixture(autouse=True)
def _fresh_health():
    dbrouter.health.reset()
    yield
    dbrouter.health.reset()


def healthy(monkeypatch, lag: float = 0.0) -> list[int]:
    """The replica answers with ``lag``; returns a list that grows by one per measurement."""
    calls: list[int] = []

    def measure() -> float:
        calls.append(1)
        return lag

    monkeypatch.setattr(dbrouter.health, "measure", measure)
    return calls


# --- the decisions, asked directly -----------------------------------------------------------------------------


def lag(replayed, positions, *, now=100.0, replay_age=None, in_recovery=True):
    return lag_seconds(in_recovery=in_recovery, replayed=replayed, positions=positions, now=now, replay_age=replay_age)


def test_lag_is_bounded_by_the_primarys_position_not_by_the_standby_alone():
    assert lag(None, [], in_recovery=False) == 0.0  # a primary (the test mirror, a promoted standby)
    assert lag(None, [(99.0, 50)]) == math.inf  # nothing replayed yet
    # replayed what the primary had flushed when this check began: current, however old its last commit (idle)
    assert lag(500, [(90.0, 400), (99.5, 500)], replay_age=3600.0) == 0.0
    # behind this check's position, but it had replayed the one of the check at 97 s: at most 3 s behind
    assert lag(450, [(90.0, 400), (97.0, 440), (99.5, 500)]) == pytest.approx(3.0)
    # never staler than its last replayed commit's age
    assert lag(450, [(90.0, 400), (99.5, 500)], replay_age=1.5) == pytest.approx(1.5)
    # cut off: it says it replayed all it received, but the primary moved on 10 s ago and it has none of it
    assert lag(400, [(90.0, 400), (95.0, 480), (99.5, 520)]) == pytest.approx(10.0)
    # no check it caught up with and no commit age: nothing bounds it
    assert lag(300, [(99.5, 500)]) == math.inf


def test_lsn_text():
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn(None) is None


def test_reads_go_to_the_primary_outside_a_read_scope():
    assert ROUTER.db_for_read(Client) == DEFAULT_DB_ALIAS  # no request at all: a worker, a command
    with dbrouter._scope(False):
        assert ROUTER.db_for_read(Client) == DEFAULT_DB_ALIAS  # a request whose view did not opt in


def test_a_read_scope_reads_the_replica_until_it_writes():
    with dbrouter._scope(True) as state:
        assert ROUTER.db_for_read(Client) == REPLICA
        assert dbrouter.read_alias() == REPLICA  # raw SQL selectors follow the same rule
        assert state.used_replica
        assert ROUTER.db_for_write(Team) == DEFAULT_DB_ALIAS
        assert state.wrote
        assert ROUTER.db_for_read(Client) == DEFAULT_DB_ALIAS  # its own write is on the primary only


def test_a_write_in_a_nested_scope_marks_the_request():
    with dbrouter._scope(False) as request_state:
        with dbrouter._scope(True):
            ROUTER.db_for_write(Team)
        assert request_state.wrote
        with dbrouter._scope(True):
            assert ROUTER.db_for_read(Client) == DEFAULT_DB_ALIAS  # wrote earlier in the same request


def test_sessions_and_transactions_never_read_the_replica(monkeypatch):
    with dbrouter._scope(True):
        assert ROUTER.db_for_read(Session) == DEFAULT_DB_ALIAS
        monkeypatch.setattr(connections[DEFAULT_DB_ALIAS], "in_atomic_block", True)
        assert ROUTER.db_for_read(Client) == DEFAULT_DB_ALIAS


def test_writes_relations_and_migrations():
    assert ROUTER.db_for_write(Client) == DEFAULT_DB_ALIAS
    assert ROUTER.allow_relation(Client(), Team()) is True
    assert ROUTER.allow_migrate(REPLICA, "inventory") is False
    assert ROUTER.allow_migrate(DEFAULT_DB_ALIAS, "inventory") is None


def test_lag_over_the_bound_reads_the_primary_with_one_warning(monkeypatch, settings, caplog):
    settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS = 5
    lag = {"s": 7.0}
    monkeypatch.setattr(dbrouter.health, "measure", lambda: lag["s"])
    clock = {"t": 1000.0}
    monkeypatch.setattr(dbrouter.time, "monotonic", lambda: clock["t"])
    caplog.set_level(logging.WARNING, logger="portal.dbrouter")

    for _ in range(5):  # five checks, one per second, all over the bound
        assert not dbrouter.health.usable()
        clock["t"] += 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "replica_unusable" in messages[0] and "lag 7.0 s over the 5 s bound" in messages[0]

    lag["s"] = 4.0
    assert dbrouter.health.usable()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "replica_usable" in messages[1]


def test_a_check_at_most_once_a_second_and_every_five_while_unreachable(monkeypatch):
    calls = healthy(monkeypatch)
    clock = {"t": 1000.0}
    monkeypatch.setattr(dbrouter.time, "monotonic", lambda: clock["t"])
    for _ in range(10):
        assert dbrouter.health.usable()
    assert len(calls) == 1
    clock["t"] += 1.0
    assert dbrouter.health.usable() and len(calls) == 2

    def refused() -> float:
        calls.append(1)
        raise OSError("connection refused")

    monkeypatch.setattr(dbrouter.health, "measure", refused)
    clock["t"] += 1.0
    assert not dbrouter.health.usable()
    assert dbrouter.health.reason == "unreachable: connection refused"
    clock["t"] += 4.9
    assert not dbrouter.health.usable() and len(calls) == 3  # not asked again before 5 s
    clock["t"] += 0.2
    assert not dbrouter.health.usable() and len(calls) == 4


@pytest.mark.django_db
def test_a_writer_is_remembered_for_the_bound(settings):
    from django.core.cache import cache

    settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS = 5
    user = UserFactory(username="writer")
    cache.delete(dbrouter.WRITER_KEY.format(user.pk))
    assert not dbrouter.recently_wrote(user)
    dbrouter.remember_write(user)
    assert dbrouter.recently_wrote(user)
    cache.delete(dbrouter.WRITER_KEY.format(user.pk))


# --- settings ---------------------------------------------------------------------------------------------------

_SNIPPET = (
    "import django; django.setup(); from django.conf import settings as s; "
    "r = s.DATABASES.get('replica'); "
    "print(sorted(s.DATABASES), s.DATABASE_ROUTERS, 'portal.dbrouter.ReadYourWritesMiddleware' in s.MIDDLEWARE, "
    "r and (r['PORT'], r['CONN_MAX_AGE'], r['OPTIONS'].get('connect_timeout'), r['OPTIONS'].get('prepare_threshold')), "
    "s.REGISTRAR_REPLICA_MAX_LAG_SECONDS)"
)


def _settings_with(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DJANGO_", "REGISTRAR_REPLICA"))}
    base = {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "REGISTRAR_EMBEDDED": "1",
        "DEBUG": "true",
        "DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar",
    }
    return subprocess.run(
        [sys.executable, "-c", _SNIPPET], env=clean | base | env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_settings_without_a_replica_change_nothing():
    result = _settings_with()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['default'] [] False None 5.0"


def test_settings_with_a_replica():
    result = _settings_with(
        DATABASE_REPLICA_URL="postgres://u@127.0.0.1:5433/registrar",
        DATABASE_CONN_MAX_AGE="7",
        REGISTRAR_REPLICA_MAX_LAG_SECONDS="2.5",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "['default', 'replica'] ['portal.dbrouter.ReplicaRouter'] True (5433, 7, 2, 5) 2.5"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_REPLICA_URL": "mysql://u@h/db"}, "DATABASE_REPLICA_URL must start with postgres://"),
        ({"DATABASE_REPLICA_URL": "postgres://u@h:x/db"}, "DATABASE_REPLICA_URL is malformed"),
        ({"DATABASE_REPLICA_URL": "sqlite:////tmp/r.sqlite3"}, "DATABASE_REPLICA_URL is a PostgreSQL streaming"),
        ({"DATABASE_REPLICA_URL": "postgres://u@h/db", "REGISTRAR_REPLICA_MAX_LAG_SECONDS": "-1"}, "must be >= 0"),
    ],
)
def test_settings_refuse_a_bad_replica(env, message):
    result = _settings_with(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr, result.stderr[-1500:]


# --- pages, with a replica alias on the test database ------------------------------------------------------------


@pytest.fixture
def mirror(transactional_db, settings):
    """A ``replica`` alias reading the test database through its own connection; router and middleware on; the
    replica healthy (a primary answers the lag query with 0). Yields the alias' connection.

    Added after pytest-django set the test up (it depends on ``transactional_db``), removed before it tears down;
    ``connections.settings`` is ``settings.DATABASES``."""
    databases = connections.settings
    databases[REPLICA] = {**connections[DEFAULT_DB_ALIAS].settings_dict, "TEST": {"MIRROR": DEFAULT_DB_ALIAS}}
    replica = connections[REPLICA]
    replica.ensure_connection = types.MethodType(_ensure_connection, replica)
    settings.DATABASE_ROUTERS = ["portal.dbrouter.ReplicaRouter"]
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(
        middleware.index("django.contrib.sessions.middleware.SessionMiddleware"),
        "portal.dbrouter.ReadYourWritesMiddleware",
    )
    settings.MIDDLEWARE = middleware
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0
    try:
        yield replica
    finally:
        connections[REPLICA].close()
        del connections[REPLICA]
        databases.pop(REPLICA, None)


def sql_of(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries]


def serve(client, method: str, path: str, *, watch_replica: bool = True, **kwargs):
    """The response and the SQL each alias ran for it (a streamed body is consumed inside the capture)."""
    with contextlib.ExitStack() as stack:
        replica = stack.enter_context(CaptureQueriesContext(connections[REPLICA])) if watch_replica else None
        primary = stack.enter_context(CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]))
        response = getattr(client, method)(path, **kwargs)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body.decode(), sql_of(replica) if replica else [], sql_of(primary)


def _counts_reads(sql: list[str]) -> list[str]:
    return [s for s in sql if "inventory_clientcount" in s]


def _client_reads(sql: list[str]) -> list[str]:
    return [s for s in sql if 'FROM "inventory_client"' in s and "pg_is_in_recovery" not in s]


@pytest.fixture
def estate(transactional_db):
    from django.contrib.auth.models import Group

    Group.objects.get_or_create(name="security")  # a data migration's row: gone after an earlier test's flush
    security = UserFactory(username="ciso-replica", roles=["security"])
    other = UserFactory(username="ciso-other", roles=["security"])
    team = TeamFactory(name="Replica team", slug="replica-team")
    clients = [ClientFactory(name=f"replica-agent-{i}", team=team) for i in range(3)]
    return security, other, team, clients


PAGES = [
    "/dashboards/",
    "/dashboards/summary.csv",
    "/dashboards/teams/",
    "/dashboards/teams/replica-team/",
    "/reports/frameworks/",
    "/reports/frameworks.csv",
    "/reports/attestation/",
    "/inventory/?q=replica-agent",
    "/inventory/export.csv?q=replica-agent",
    "/inventory/export.json",
    "/api/v1/clients/?q=replica-agent",
    "/api/v1/reports/sprawl",
    "/api/v1/reports/frameworks",
]


@pytest.mark.postgres_only
def test_read_only_pages_read_the_replica(mirror, estate, client):
    security, _other, _team, clients = estate
    client.force_login(security)
    for path in PAGES:
        response, body, replica, primary = serve(client, "get", path)
        assert response.status_code == 200, (path, body[:500])
        assert replica, f"{path} read nothing from the replica"
        # What the page is about came from the replica; the primary served the session and the user.
        assert not _counts_reads(primary) and not _client_reads(primary), (path, primary)
    response, body, replica, _primary = serve(client, "get", "/inventory/?q=replica-agent")
    assert all(c.name in body for c in clients)
    assert _client_reads(replica)
    _response, body, replica, _primary = serve(client, "get", "/inventory/export.csv?q=replica-agent")
    assert body.count("replica-agent-") == 3 and _client_reads(replica)  # streamed, chunk by chunk, from the replica
    _response, _body, replica, _primary = serve(client, "get", "/dashboards/")
    assert _counts_reads(replica)  # the raw-SQL count selectors too (read_connection)
    _response, body, replica, _primary = serve(client, "get", f"/api/v1/clients/{clients[0].registration_id}/")
    assert clients[0].name in body and _client_reads(replica)


@pytest.mark.postgres_only
def test_other_pages_and_every_write_read_the_primary(mirror, estate, client):
    security, _other, _team, clients = estate
    client.force_login(security)
    for path in (
        f"/inventory/{clients[0].registration_id}/",  # explain: after every action; the primary
        f"/api/v1/clients/{clients[0].registration_id}/evidence/",  # exact, and logged
        "/",
        "/approvals/",
    ):
        response, _body, replica, _primary = serve(client, "get", path)
        assert response.status_code in (200, 403), path
        assert replica == [], (path, replica)
    response, _body, replica, _primary = serve(
        client,
        "post",
        f"/api/v1/clients/{clients[0].registration_id}/hold/",
        data={"reason": "incident 42"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert replica == []


@pytest.mark.postgres_only
def test_who_wrote_reads_the_primary_for_the_bound(mirror, estate, client, settings):
    from django.core.cache import cache
    from django.test import Client as HttpClient

    security, other, _team, clients = estate
    client.force_login(security)
    response, _body, replica, _primary = serve(
        client,
        "post",
        f"/api/v1/clients/{clients[1].registration_id}/hold/",
        data={"reason": "incident 43"},
        content_type="application/json",
    )
    assert response.status_code == 200 and replica == []
    # The same person: their own write, from the primary (the page shows the hold).
    response, body, replica, primary = serve(client, "get", "/inventory/?q=replica-agent")
    assert response.status_code == 200
    assert replica == [] and _client_reads(primary)
    # Someone else: the replica.
    colleague = HttpClient()
    colleague.force_login(other)
    _response, _body, replica, _primary = serve(colleague, "get", "/inventory/?q=replica-agent")
    assert _client_reads(replica)
    # Once the bound has passed (the marker expires with it), the writer reads the replica again.
    assert cache.get(dbrouter.WRITER_KEY.format(security.pk)) is not None
    cache.delete(dbrouter.WRITER_KEY.format(security.pk))
    _response, _body, replica, _primary = serve(client, "get", "/inventory/?q=replica-agent")
    assert _client_reads(replica)


@pytest.mark.postgres_only
def test_in_a_scope_a_write_then_reads_and_transactions_use_the_primary(mirror, estate):
    with dbrouter._scope(True):
        with CaptureQueriesContext(mirror) as replica:
            assert Client.objects.count() == 3
        assert len(replica) == 1
        with CaptureQueriesContext(mirror) as replica:
            with transaction.atomic():
                assert Client.objects.count() == 3
                list(Client.objects.select_for_update().filter(name="replica-agent-0"))
            TeamFactory(name="Written in scope", slug="written")
            assert Team.objects.filter(slug="written").exists()
            assert Client.objects.count() == 3
        assert len(replica) == 0


@pytest.mark.postgres_only
def test_celery_tasks_read_the_primary(mirror, estate):
    from inventory import tasks

    with CaptureQueriesContext(mirror) as replica:
        tasks.refresh_report_snapshots.apply()
        tasks.sweep_expired.apply()
    assert len(replica) == 0


@pytest.mark.postgres_only
def test_lag_over_the_bound_reads_the_primary(mirror, estate, client, monkeypatch, settings):
    settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS = 5
    healthy(monkeypatch, lag=6.0)
    client.force_login(estate[0])
    response, _body, replica, primary = serve(client, "get", "/dashboards/")
    assert response.status_code == 200
    assert replica == [] and _counts_reads(primary)


@pytest.mark.postgres_only
def test_a_replica_failing_mid_page_falls_back_to_the_primary(mirror, estate, client, monkeypatch, caplog):
    """The replica passed its last check, then stopped answering: the page is served from the primary, one
    warning is logged, and the next request does not try the replica."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    mirror.close()
    mirror.settings_dict["PORT"] = dead_port
    healthy(monkeypatch)
    caplog.set_level(logging.WARNING)
    client.force_login(estate[0])
    for path in ("/dashboards/", "/api/v1/reports/sprawl", "/inventory/?q=replica-agent"):
        dbrouter.health.reset()
        dbrouter.health.usable()  # the last check said "ok"
        response, _body, _replica, primary = serve(client, "get", path, watch_replica=False)
        assert response.status_code == 200, path
        assert _counts_reads(primary) or _client_reads(primary), path
        assert not dbrouter.health.ok
        response, _body, _replica, _primary = serve(client, "get", path, watch_replica=False)
        assert response.status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "replica_unusable" in r.getMessage()]
    assert len(warnings) == 3 and all("failed during a request" in w for w in warnings)
    assert not [r for r in caplog.records if "database_unavailable" in r.getMessage()]  # no outage, no 503
