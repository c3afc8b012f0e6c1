"""End-to-end proof against the real OpenID provider (tests/idp/server.mjs on loopback).

An agent registers (auto-approved, low tier) → the outbox delivers → the client exists at the IdP → the
agent obtains an access token with a private_key_jwt client_credentials grant → the owner retires it (or
it expires) → the outbox delivers → the IdP has removed it: the same grant fails with ``invalid_client``
and the token issued before introspects ``active: false``. Same for expiry, and for a high-tier request
registered over HTTP that reaches the IdP only after two distinct approvals.
"""

from __future__ import annotations

import pytest

from inventory.choices import ClientState, OutboxStatus
from inventory.connectors.base import ClientSpec
from inventory.lifecycle import client_transition
from inventory.outbox import push
from inventory.outbox.deliver import deliver_client_outbox
from portal.audit import Actor, events_for
from tests.agents import Agent
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401
from tests.factories import UserFactory
from tests.provisioning import markers_at_idp, real_idp, register_agent  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def resource_server(oidc_idp, real_idp):  # noqa: F811
    """A resource server's own client at the IdP, allowed to introspect tokens."""
    rs_agent = Agent()
    connector = push.connector_for(real_idp)
    created = connector.create(ClientSpec(registrar_id="rs-e2e", client_name="resource server", jwks=rs_agent.jwks))
    yield rs_agent, created.client_id
    connector.delete(created.client_id, created.remote_state)


def provision_and_get_token(oidc_idp, real_idp, agent: Agent):  # noqa: F811
    owner = UserFactory(username="sponsor", roles=["owner"])
    client = register_agent(idp=real_idp, owner=owner, agent=agent, scopes=["tickets:read", "docs:read"])
    assert client.state == ClientState.PROVISIONING and client.idp_client_id is None

    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    assert markers_at_idp(oidc_idp)[client.registration_id] == 1
    granted = agent.client_credentials(oidc_idp, client.idp_client_id, "tickets:read")
    assert granted.status_code == 200, granted.text
    assert granted.json()["scope"] == "tickets:read"
    # scopes outside the approved set never reach a token (refused, or dropped if the IdP never saw them)
    wider = agent.client_credentials(oidc_idp, client.idp_client_id, "repo:write")
    assert wider.status_code == 400 or "repo:write" not in wider.json().get("scope", "").split()
    return client, owner, granted.json()["access_token"]


def assert_gone_at_idp(oidc_idp, client, agent: Agent, token: str, resource_server) -> None:
    rs_agent, rs_client_id = resource_server
    refused = agent.client_credentials(oidc_idp, client.idp_client_id, "tickets:read")
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert rs_agent.introspect(oidc_idp, rs_client_id, token) == {"active": False}
    assert markers_at_idp(oidc_idp)[client.registration_id] == 0


def test_retire_removes_the_client_and_kills_its_tokens(oidc_idp, real_idp, resource_server):  # noqa: F811
    agent = Agent()
    client, owner, token = provision_and_get_token(oidc_idp, real_idp, agent)
    rs_agent, rs_client_id = resource_server
    info = rs_agent.introspect(oidc_idp, rs_client_id, token)
    assert info["active"] is True and info["client_id"] == client.idp_client_id

    client_transition(client=client, target=ClientState.RETIRED, actor=Actor.user(owner), reason="project over")
    # until the outbox delivers, the IdP still honours the client: the change is queued, not lost
    assert agent.client_credentials(oidc_idp, client.idp_client_id, "tickets:read").status_code == 200
    assert deliver_client_outbox(client.pk) is True

    assert_gone_at_idp(oidc_idp, client, agent, token, resource_server)
    client.refresh_from_db()
    assert client.state == ClientState.RETIRED and client.idp_disabled_at is not None
    assert set(client.outbox.values_list("status", flat=True)) == {OutboxStatus.DONE}
    actions = [e.action for e in events_for("client", client.registration_id)]
    assert actions == ["client.create", "client.active", "client.retired", "client.idp_delete"]


def test_expiry_disables_the_client_at_the_idp(oidc_idp, real_idp, resource_server):  # noqa: F811
    agent = Agent()
    client, _owner, token = provision_and_get_token(oidc_idp, real_idp, agent)

    client_transition(client=client, target=ClientState.EXPIRED, actor=Actor.system("sweep_expired"))
    assert deliver_client_outbox(client.pk) is True

    # rfc7591 has no "disabled": disabling deletes the client, which also revokes its tokens
    assert_gone_at_idp(oidc_idp, client, agent, token, resource_server)
    client.refresh_from_db()
    assert client.state == ClientState.EXPIRED and client.idp_disabled_at is not None
    assert client.idp_state == {"deleted": True}
    assert "client.idp_disable" in [e.action for e in events_for("client", client.registration_id)]


def test_high_tier_request_after_two_approvals(
    oidc_idp,
    real_idp,
    resource_server,
    catalogue,
    client,  # noqa: F811
    approver,
    approver2,
    _fresh_limits_and_policy,
):  # noqa: F811
    from approvals.choices import RequestState
    from approvals.models import RegistrationRequest
    from approvals.services import request_approve
    from inventory.models import Client
    from tests.approvals.intake_support import call, make_token, path_of, post

    real_idp.is_default = True
    real_idp.save()
    owner = UserFactory(username="high-sponsor", roles=["owner"])
    agent = Agent()
    _, plaintext = make_token(owner)

    response = post(
        client,
        {
            "client_name": "release-bot",
            "purpose": "Push release tags",
            "scope": "repo:write",
            "internal_only": True,
            "jwks": agent.jwks,
            "requested_ttl": 3600,
        },
        plaintext,
    )

    assert response.status_code == 202, response.content
    pending = response.json()
    request = RegistrationRequest.objects.get()
    assert request.risk_tier == "high" and request.state == RequestState.PENDING
    assert markers_at_idp(oidc_idp)[request.public_id] == 0  # nothing at the IdP before the approvals

    request_approve(request=request, approver=approver, reason="release automation, reviewed")
    assert not Client.objects.exists()  # one approval is not enough for a high-tier request
    request_approve(request=RegistrationRequest.objects.get(), approver=approver2, reason="second pair of eyes")
    created = Client.objects.get()
    assert created.state == ClientState.PROVISIONING and created.registration_id == request.public_id

    assert deliver_client_outbox(created.pk) is True

    created.refresh_from_db()
    assert created.state == ClientState.ACTIVE and markers_at_idp(oidc_idp)[created.registration_id] == 1
    polled = call(client, "GET", path_of(pending["registration_client_uri"]), pending["registration_access_token"])
    assert polled.status_code == 200, polled.content
    assert polled.json()["client_id"] == created.idp_client_id
    granted = agent.client_credentials(oidc_idp, created.idp_client_id, "repo:write")
    assert granted.status_code == 200, granted.text
    token = granted.json()["access_token"]

    client_transition(client=created, target=ClientState.RETIRED, actor=Actor.user(owner), reason="release done")
    assert deliver_client_outbox(created.pk) is True

    assert_gone_at_idp(oidc_idp, created, agent, token, resource_server)
