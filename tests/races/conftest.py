"""Fixtures of the race suite: one server for the whole session, and the data each race needs.

The server (``race_server``) starts on the first race test and stops when the session ends; its database is
created and migrated for it and dropped afterwards. Each race test runs with this process's default database
connection pointed at that database (``_race_database``), so the test builds its data with the ordinary ORM
and factories (``world``) and checks the outcome with them, while every action under test goes over HTTP.

Every module here sets ``pytestmark = RACE`` (tests/races/support.py): ``slow`` (it needs the server) and the xdist group
``races``, so ``pytest -n 2 --dist loadgroup`` runs them all on one worker and the server starts once.
"""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from tests.conftest import CATALOGUE
from tests.races.harness import RaceServer, using_database
from tests.races.support import RATE_PER_ADDRESS, RATE_PER_TOKEN, World


@pytest.fixture(scope="session")
def race_server(django_db_blocker) -> RaceServer:
    from tests.idp_server import IdPProcess
    from tests.provisioning import connection_for

    database = settings.DATABASES["default"]
    auth = database.get("USER") or "postgres"
    if database.get("PASSWORD"):
        auth += f":{database['PASSWORD']}"
    admin_url = f"postgres://{auth}@{database.get('HOST') or '127.0.0.1'}:{database.get('PORT') or 5432}/postgres"
    server = RaceServer(
        admin_url=admin_url,
        database=f"registrar_races_{secrets.token_hex(4)}",
        secret_key=settings.SECRET_KEY,
        encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
        rates={"token": f"{RATE_PER_TOKEN}/h", "address": f"{RATE_PER_ADDRESS}/h"},
    )
    try:
        server.create_database()
        idp = IdPProcess().start()
        server.push(idp.stop)
        server.idp_process = idp
        with django_db_blocker.unblock(), using_database(server.database):
            _seed(server, connection_for)
        server.start_services()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


def _seed(server: RaceServer, connection_for) -> None:
    """What every race shares: the scope catalogue, the real IdP as default, a dry-run IdP for pre-made clients."""
    from tests.factories import IdPFactory, ScopeFactory

    for name, sensitivity, category in CATALOGUE:
        ScopeFactory(name=name, sensitivity=sensitivity, category=category)
    server.idp = connection_for(server.idp_process, name="races-idp", is_default=True)
    server.seed_idp = IdPFactory(name="races-seed-dry-run")


@pytest.fixture(autouse=True)
def _race_database(race_server, django_db_blocker):
    with django_db_blocker.unblock(), using_database(race_server.database):
        yield


@pytest.fixture
def world(race_server) -> World:
    return World(race_server)
