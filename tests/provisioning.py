"""Helpers for tests that provision clients into the real test IdP (tests/idp) through the outbox.

Import the fixtures you need into a test module (``from tests.provisioning import real_idp  # noqa: F401``).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from inventory.choices import CreatedVia, IdPKind, RiskTier
from inventory.models import Client, IdPConnection
from inventory.services import client_create
from portal.audit import Actor
from tests.agents import Agent
from tests.idp_server import IdPProcess


def connection_for(process: IdPProcess, *, name: str = "test-oidc-provider", **fields) -> IdPConnection:
    config, secrets = process.connector_config()
    connection, _ = IdPConnection.objects.update_or_create(
        name=name, defaults={"kind": IdPKind.RFC7591, "config": config, "secrets": secrets, **fields}
    )
    return connection


@pytest.fixture
def real_idp(db, oidc_idp: IdPProcess) -> IdPConnection:
    """An rfc7591 IdPConnection pointed at the session's real oidc-provider."""
    return connection_for(oidc_idp)


def register_agent(*, idp: IdPConnection, owner, agent: Agent | None = None, scopes=("tickets:read",),
                   name: str = "agent", **kwargs) -> Client:
    """What an auto-approved low-tier registration writes: a client in provisioning + an outbox CREATE."""
    agent = agent or Agent()
    return client_create(
        actor=Actor.agent("test-agent", "tok_test"),
        idp=idp,
        name=name,
        owner=owner,
        purpose="integration test agent",
        scopes=list(scopes),
        expires_at=kwargs.pop("expires_at", timezone.now() + timedelta(hours=12)),
        risk_tier=RiskTier.LOW,
        created_via=CreatedVia.TOKEN,
        internal_only=True,
        jwks=agent.jwks,
        **kwargs,
    )


def idp_clients(process: IdPProcess) -> list[dict]:
    """Every client the IdP holds, from its admin listing."""
    response = httpx.get(
        process.admin_clients_endpoint,
        params={"limit": 1000, "offset": 0},
        headers={"Authorization": f"Bearer {process.admin_token}"},
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    clients = body["clients"]
    while len(clients) < body["total"]:
        more = httpx.get(
            process.admin_clients_endpoint,
            params={"limit": 1000, "offset": len(clients)},
            headers={"Authorization": f"Bearer {process.admin_token}"},
            timeout=10,
        ).json()["clients"]
        if not more:
            break
        clients += more
    return clients


def markers_at_idp(process: IdPProcess) -> Counter:
    """How many clients at the IdP carry each Registrar correlation marker."""
    return Counter(client.get("registrar_id") for client in idp_clients(process) if client.get("registrar_id"))


@pytest.fixture
def fresh_idp():
    """A real oidc-provider of this test's own (empty at start), for tests that count everything it holds."""
    with IdPProcess() as process:
        yield process


@pytest.fixture
def fresh_connection(db, fresh_idp: IdPProcess) -> IdPConnection:
    return connection_for(fresh_idp, name="fresh-oidc-provider")
