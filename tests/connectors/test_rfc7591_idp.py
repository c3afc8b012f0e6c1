"""The rfc7591 connector against the real oidc-provider on loopback (tests/idp/server.mjs)."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from inventory.connectors import BadRequest, NotFound, NotSupported, build_connector
from inventory.connectors.rfc7591 import Rfc7591Connector

pytestmark = pytest.mark.idp


def introspect(idp, resource_server, rs_id: str, token: str) -> dict:
    data = {"token": token, **resource_server.client_auth(rs_id, idp.issuer)}
    response = httpx.post(idp.introspection_endpoint, data=data, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_full_lifecycle(idp, connector, agent, make_spec):
    spec = make_spec()

    # create: the IdP's client_id plus what RFC 7592 management needs
    created = connector.create(spec)
    state = created.remote_state
    assert created.client_id
    assert state["registration_client_uri"] == f"{idp.registration_endpoint}/{created.client_id}"
    assert state["registration_access_token"]
    assert "client_secret" not in state  # private_key_jwt: no shared secret issued

    # get: the correlation marker and scopes round-trip
    remote = connector.get(created.client_id, state)
    assert remote.registrar_id == spec.registrar_id
    assert remote.scopes == ["repo:read", "tickets.write"]
    assert remote.enabled is True
    assert remote.metadata["software_id"] == "ci-bot"
    assert remote.metadata["grant_types"] == ["client_credentials"]
    assert "registration_access_token" not in remote.metadata

    # update: narrowing; the registration access token rotates and the new one is returned
    narrowed = dataclasses.replace(spec, scopes=["repo:read"], client_name="agent narrowed")
    updated = connector.update(created.client_id, narrowed, state)
    assert updated.client_id == created.client_id
    assert updated.remote_state["registration_access_token"] != state["registration_access_token"]
    assert updated.remote_state["registration_client_uri"] == state["registration_client_uri"]
    # the old token is dead; the client still exists, so this is not reported as NotFound
    with pytest.raises(BadRequest, match="stale token"):
        connector.get(created.client_id, state)
    state = updated.remote_state
    remote = connector.get(created.client_id, state)
    assert remote.scopes == ["repo:read"]
    assert remote.metadata["client_name"] == "agent narrowed"

    # list via the admin endpoint shows the marker
    listed = {client.client_id: client for client in connector.list()}
    assert listed[created.client_id].registrar_id == spec.registrar_id
    assert "client_secret" not in listed[created.client_id].metadata

    # a resource server that may introspect
    resource_server = type(agent)()
    rs = connector.create(make_spec(scopes=[], jwks=resource_server.jwks))

    # the agent gets a token with its own key, for scopes it holds and only those
    granted = agent.client_credentials(idp, created.client_id, "repo:read")
    assert granted.status_code == 200, granted.text
    access_token = granted.json()["access_token"]
    assert granted.json()["scope"] == "repo:read"
    widened = agent.client_credentials(idp, created.client_id, "tickets.write")
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"

    info = introspect(idp, resource_server, rs.client_id, access_token)
    assert info["active"] is True
    assert info["client_id"] == created.client_id
    assert info["scope"] == "repo:read"

    # delete: the client can no longer authenticate and its earlier token is dead
    connector.delete(created.client_id, state)
    refused = agent.client_credentials(idp, created.client_id, "repo:read")
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert introspect(idp, resource_server, rs.client_id, access_token) == {"active": False}
    assert created.client_id not in {client.client_id for client in connector.list()}

    # gone is gone: get raises NotFound, delete again succeeds quietly
    with pytest.raises(NotFound):
        connector.get(created.client_id, state)
    connector.delete(created.client_id, state)

    connector.delete(rs.client_id, rs.remote_state)


def test_disable_deletes_the_client_and_revokes_its_tokens(idp, connector, agent, make_spec):
    spec = make_spec(scopes=["repo:read"])
    created = connector.create(spec)
    token = agent.client_credentials(idp, created.client_id, "repo:read").json()["access_token"]

    result = connector.disable(created.client_id, spec, created.remote_state)

    assert result.deleted is True
    assert result.remote_state == {}
    assert agent.client_credentials(idp, created.client_id, "repo:read").status_code == 401
    resource_server = type(agent)()
    rs = connector.create(make_spec(scopes=[], jwks=resource_server.jwks))
    assert introspect(idp, resource_server, rs.client_id, token) == {"active": False}
    connector.delete(rs.client_id, rs.remote_state)


def test_create_refused_without_a_valid_initial_access_token(idp, make_spec):
    config, secrets = idp.connector_config()
    connector = build_connector("rfc7591", config, {**secrets, "initial_access_token": "wrong-token-value"})
    with pytest.raises(BadRequest) as caught:
        connector.create(make_spec())
    assert caught.value.status_code == 401
    assert caught.value.detail["error"] == "invalid_token"
    assert "wrong-token-value" not in str(caught.value)


def test_invalid_metadata_is_a_bad_request(connector, make_spec):
    with pytest.raises(BadRequest) as caught:
        connector.create(make_spec(token_endpoint_auth_method="private_key_jwt", jwks=None))
    assert caught.value.status_code == 400
    assert caught.value.detail["error"] == "invalid_client_metadata"


def test_list_without_admin_endpoint_is_not_supported(idp):
    config, secrets = idp.connector_config()
    del config["list_endpoint"]
    connector = Rfc7591Connector(config=config, secrets=secrets)
    with pytest.raises(NotSupported):
        list(connector.list())


def test_admin_listing_requires_the_admin_token(idp):
    assert httpx.get(idp.admin_clients_endpoint, timeout=10).status_code == 401
    wrong = httpx.get(idp.admin_clients_endpoint, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401


def test_list_pages_through_many_clients(idp, connector, make_spec, monkeypatch):
    monkeypatch.setattr("inventory.connectors.rfc7591.LIST_PAGE_SIZE", 2)
    created = [connector.create(make_spec()) for _ in range(5)]
    ids = [client.client_id for client in connector.list()]
    assert len(ids) == len(set(ids))
    assert {result.client_id for result in created} <= set(ids)
    for result in created:
        connector.delete(result.client_id, result.remote_state)


def test_a_cimd_client_gets_its_document_url_as_client_id(idp, connector, make_spec):
    url = f"https://app.example.com/oauth/{dataclasses.replace(make_spec()).registrar_id}.json"
    spec = make_spec(
        client_id=url,
        token_endpoint_auth_method="none",
        jwks=None,
        grant_types=["authorization_code"],
        response_types=["code"],
        redirect_uris=["https://app.example.com/cb"],
        scopes=[],
    )
    created = connector.create(spec)
    assert created.client_id == url
    remote = connector.get(created.client_id, created.remote_state)
    assert remote.client_id == url and remote.registrar_id == spec.registrar_id
    assert remote.metadata["token_endpoint_auth_method"] == "none"
    # any other client still gets an id the IdP chose
    other = connector.create(make_spec())
    assert not other.client_id.startswith("https://")
    connector.delete(created.client_id, created.remote_state)
    connector.delete(other.client_id, other.remote_state)


def test_a_client_without_its_registration_token_is_updated_through_the_admin_api_only_when_opted_in(idp, make_spec):
    """An adopted client (found at the IdP: Registrar never had its RFC 7592 token) is replaced with
    ``PUT {list_endpoint}/{client_id}`` when ``admin_update`` is on; without it the update is refused before any
    call, never guessed (an IdP without that route would answer 404, read as "gone")."""
    from inventory.connectors import Misconfigured

    registered = httpx.post(
        idp.registration_endpoint,
        json={"client_name": "found", "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": []},
        headers={"Authorization": f"Bearer {idp.initial_access_token}"},
        timeout=10,
    ).json()
    client_id = registered["client_id"]
    config, secrets = idp.connector_config()
    spec = make_spec(client_name="adopted and governed")
    with (
        Rfc7591Connector(config=config, secrets=secrets, timeout=10.0) as plain,
        pytest.raises(Misconfigured, match="no registration access token"),
    ):
        plain.update(client_id, spec, {})
    with Rfc7591Connector(config=config | {"admin_update": True}, secrets=secrets, timeout=10.0) as admin:
        result = admin.update(client_id, spec, {})
        assert result.client_id == client_id
    held = httpx.get(
        idp.console_clients_endpoint,
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {idp.admin_token}"},
        timeout=10,
    ).json()["clients"]
    mine = [c for c in held if c["client_id"] == client_id]
    assert len(mine) == 1 and mine[0]["client_name"] == "adopted and governed"
