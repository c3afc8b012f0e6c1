"""Fixtures for the connector tests: a real oidc-provider on loopback and agent keys.

Everything here is DB-free and settings-free, so ``pytest -p no:django tests/connectors`` works.
"""

from __future__ import annotations

import uuid

import pytest

from inventory.connectors.base import ClientSpec
from inventory.connectors.rfc7591 import Rfc7591Connector
from tests.agents import Agent
from tests.idp_server import IdPProcess


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "idp: needs node and the oidc-provider test IdP (tests/idp)")


@pytest.fixture(scope="session")
def idp(oidc_idp: IdPProcess) -> IdPProcess:
    # The session-wide real IdP (tests/conftest.py), under the name these tests have always used.
    return oidc_idp


@pytest.fixture
def connector(idp: IdPProcess):
    config, secrets = idp.connector_config()
    with Rfc7591Connector(config=config, secrets=secrets, timeout=10.0) as conn:
        yield conn


@pytest.fixture
def agent() -> Agent:
    return Agent()


@pytest.fixture
def make_spec(agent: Agent):
    def make(**overrides) -> ClientSpec:
        registrar_id = overrides.pop("registrar_id", f"reg_{uuid.uuid4().hex[:12]}")
        values = {
            "registrar_id": registrar_id,
            "client_name": f"agent {registrar_id}",
            "scopes": ["repo:read", "tickets.write"],
            "jwks": agent.jwks,
            "software_id": "ci-bot",
            "software_version": "1.2.3",
        }
        values.update(overrides)
        return ClientSpec(**values)

    return make
