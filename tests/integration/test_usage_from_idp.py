"""Usage from the real IdP: after a client-credentials grant, the test provider (tests/idp/server.mjs, its
token event hooks) reports the use to Registrar's POST /api/v1/usage/ with a usage:write token, batched, and
the client's last use appears — well within a minute (the provider flushes every 200 ms here)."""

from __future__ import annotations

import time

import pytest

from inventory.choices import ClientState
from inventory.models import Client
from inventory.outbox import deliver
from portal.crypto import hash_token
from portal.models import ApiToken, AuditEvent
from tests.agents import Agent
from tests.factories import UserFactory
from tests.idp_server import IdPProcess
from tests.provisioning import connection_for, register_agent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
TOKEN = "rapi_idp_usage_hook_0001"


def test_token_issuance_reported_by_the_idp(live_server, catalogue):
    ApiToken.objects.create(
        user=UserFactory(username="idp-usage"),
        name="demo-idp",
        prefix=TOKEN[:12],
        token_hash=hash_token(TOKEN),
        rights=["usage:write"],
    )
    usage = {"url": f"{live_server.url}/api/v1/usage/", "token": TOKEN, "idp": "usage-idp", "flush_ms": 200}
    with IdPProcess(usage=usage) as process:
        idp = connection_for(process, name="usage-idp")
        agent = Agent()
        client = register_agent(idp=idp, owner=UserFactory(username="usage-owner", roles=["owner"]), agent=agent)
        assert deliver.deliver_client_outbox(client.pk) is True
        client.refresh_from_db()
        time.sleep(0.6)  # three flushes: registering the client is no use of it
        client.refresh_from_db()
        assert client.state == ClientState.ACTIVE and client.last_used_at is None
        granted = agent.client_credentials(process, client.idp_client_id, "tickets:read")
        assert granted.status_code == 200, granted.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            client.refresh_from_db()
            if client.last_used_at is not None:
                break
            time.sleep(0.1)
        assert client.last_used_at is not None, f"no usage report arrived; IdP log: {process.log_path}"
        assert client.last_used_source == "usage-api:demo-idp"
        assert AuditEvent.objects.filter(action="usage.ingest").exists()
        assert not Client.objects.filter(managed=False, idp=idp).exists()  # its own client is known
