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


def register_agent(
    *, idp: IdPConnection, owner, agent: Agent | None = None, scopes=("tickets:read",), name: str = "agent", **kwargs
) -> Client:
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
    """Every client the IdP holds, from its operator console (works with and without its listing)."""
    response = httpx.get(
        process.console_clients_endpoint,
        params={"limit": 1000, "offset": 0},
        headers={"Authorization": f"Bearer {process.admin_token}"},
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    clients = body["clients"]
    while len(clients) < body["total"]:
        more = httpx.get(
            process.console_clients_endpoint,
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


@pytest.fixture(scope="session")
def _private_idp():
    with IdPProcess() as process:
        yield process


@pytest.fixture
def fresh_idp(_private_idp: IdPProcess) -> IdPProcess:
    """A real oidc-provider holding no clients when the test starts, for tests that count everything in it.

    One process per session (starting node per test is slow on a busy machine), emptied through its
    admin API before each test.
    """
    empty(_private_idp)
    return _private_idp


def empty(process: IdPProcess) -> None:
    """Delete everything the IdP holds, through its operator console."""
    for client in idp_clients(process):
        console_delete(process, client["client_id"])
    assert idp_clients(process) == []


def console_delete(process: IdPProcess, client_id: str) -> None:
    """What the person a sync failure asks for does at the IdP: delete a client there by hand."""
    response = httpx.delete(
        f"{process.console_clients_endpoint}/{client_id}",
        headers={"Authorization": f"Bearer {process.admin_token}"},
        timeout=10,
    )
    assert response.status_code in (204, 404), response.text


@pytest.fixture(scope="session")
def _unlisted_idp():
    with IdPProcess(listing=False) as process:
        yield process


@pytest.fixture
def unlisted_idp(_unlisted_idp: IdPProcess) -> IdPProcess:
    """A real oidc-provider WITHOUT a client listing (a plain RFC 7591/7592 IdP), empty when the test starts."""
    empty(_unlisted_idp)
    return _unlisted_idp


@pytest.fixture
def unlisted_connection(db, unlisted_idp: IdPProcess) -> IdPConnection:
    return connection_for(unlisted_idp, name="unlisted-oidc-provider")


@pytest.fixture
def fresh_connection(db, fresh_idp: IdPProcess) -> IdPConnection:
    return connection_for(fresh_idp, name="fresh-oidc-provider")
