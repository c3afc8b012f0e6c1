"""Fixtures of the fault suite: one server for the whole suite on a PostgreSQL of its own, the test IdP behind a
fault proxy as its default IdP, seeded for agents and people.

Every module sets ``pytestmark = FAULT`` (``slow``, ``postgres_only`` and the xdist group ``faults``): under
``pytest -n 2 --dist loadgroup`` the fault tests share one xdist worker, so the server (its migrations are most of
its start-up) starts once, and run alongside the other slow suites on ports and a database cluster of their own.
Each test leaves the server as it found it: the proxy passing, PostgreSQL and Redis up, a worker consuming.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import FaultServer, PostgresServer, build_fault_server, using_server
from tests.races.support import World

FAULT = [
    pytest.mark.slow,
    pytest.mark.xdist_group("faults"),
    pytest.mark.postgres_only,
]  # a private PostgreSQL and gunicorn


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    server = PostgresServer().init()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def fault_server(postgres, django_db_blocker) -> FaultServer:
    with django_db_blocker.unblock():
        server = build_fault_server(postgres)
    yield server
    server.stop()


@pytest.fixture
def in_server_database(fault_server, django_db_blocker):
    with django_db_blocker.unblock(), using_server(fault_server.database_url):
        yield


@pytest.fixture
def world(fault_server, in_server_database) -> World:
    return World(fault_server)
