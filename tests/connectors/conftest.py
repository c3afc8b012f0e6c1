"""Fixtures for the connector tests: a real oidc-provider on loopback and agent keys.

Everything here is DB-free and settings-free, so ``pytest -p no:django tests/connectors`` works.
"""

from __future__ import annotations

import shutil
import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from inventory.connectors.base import ClientSpec
from inventory.connectors.rfc7591 import Rfc7591Connector
from tests.idp_server import IdPProcess


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "idp: needs node and the oidc-provider test IdP (tests/idp)")


@pytest.fixture(scope="session")
def idp():
    # Node.js is a test requirement (make test installs the IdP's packages); a missing node is a
    # failure, not a skip, so a green run always means the real IdP was exercised.
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the real-IdP tests need it (apt-get install nodejs)")
    with IdPProcess() as process:
        yield process


@pytest.fixture
def connector(idp: IdPProcess):
    config, secrets = idp.connector_config()
    with Rfc7591Connector(config=config, secrets=secrets, timeout=10.0) as conn:
        yield conn


class Agent:
    """An agent's key pair and the private_key_jwt client assertions it signs (RFC 7523)."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", auto_kid=True)

    @property
    def jwks(self) -> dict:
        return {"keys": [{**self.key.as_dict(private=False), "alg": "ES256", "use": "sig"}]}

    def assertion(self, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 60}
        claims["jti"] = uuid.uuid4().hex
        return jwt.encode({"alg": "ES256", "kid": self.key.kid}, claims, self.key)

    def client_auth(self, client_id: str, audience: str) -> dict[str, str]:
        return {
            "client_id": client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(client_id, audience),
        }

    def client_credentials(self, idp: IdPProcess, client_id: str, scope: str) -> httpx.Response:
        data = {"grant_type": "client_credentials", "scope": scope, **self.client_auth(client_id, idp.issuer)}
        return httpx.post(idp.token_endpoint, data=data, timeout=10)


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
