"""Fixtures of the fault suite: a server on a PostgreSQL of its own, seeded for agents and people.

Every module sets ``pytestmark = FAULT`` (``slow``, and the xdist group ``faults``): under
``pytest -n 2 --dist loadgroup`` the fault tests share one xdist worker and run alongside the other slow suites
(races), on ports and a database cluster of their own.
"""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from tests.conftest import CATALOGUE
from tests.faults.harness import FaultServer, PostgresServer, using_server
from tests.races.support import World

FAULT = [
    pytest.mark.slow,
    pytest.mark.xdist_group("faults"),
    pytest.mark.postgres_only,
]  # a private PostgreSQL and gunicorn


@pytest.fixture(scope="module")
def postgres() -> PostgresServer:
    server = PostgresServer().init()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def fault_server(postgres, django_db_blocker) -> FaultServer:
    server = FaultServer(
        postgres=postgres,
        database=f"registrar_faults_{secrets.token_hex(4)}",
        secret_key=settings.SECRET_KEY,
        encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
        rates={"token": "100000/h", "address": "100000/h"},
    )
    try:
        server.create_database()
        with django_db_blocker.unblock(), using_server(server.database_url):
            from tests.factories import IdPFactory, ScopeFactory

            for name, sensitivity, category in CATALOGUE:
                ScopeFactory(name=name, sensitivity=sensitivity, category=category)
            server.seed_idp = IdPFactory(name="faults-dry-run", is_default=True)
            # The load registers hundreds of clients for one owner; the per-owner cap is not what is under test.
            from approvals.models import Policy

            policy = Policy.objects.get(is_active=True)
            policy.thresholds = {**policy.thresholds, "max_live_clients_per_owner": 10**9}
            policy.save(update_fields=["thresholds"])
            server.idp = server.seed_idp
        server.start_services()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def in_server_database(fault_server, django_db_blocker):
    with django_db_blocker.unblock(), using_server(fault_server.database_url):
        yield


@pytest.fixture
def world(fault_server, in_server_database) -> World:
    return World(fault_server)
