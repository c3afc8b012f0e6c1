"""The Keycloak connector against a transport-level fake that asserts exact method, path and JSON body.

Keycloak itself is not available here; the expected calls follow the Admin REST API documentation.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import httpx
import pytest

from inventory.connectors import AlreadyExists, ClientSpec, NotFound, Transient, build_connector

BASE = "https://kc.test"
TOKEN_CALL = (
    "POST",
    "/realms/agents/protocol/openid-connect/token",
    {"grant_type": "client_credentials", "client_id": "registrar-admin", "client_secret": "kc-admin-secret"},
    httpx.Response(200, json={"access_token": "admin-at", "expires_in": 300}),
)
JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "X", "y": "Y", "kid": "k1"}]}
SPEC = ClientSpec(
    registrar_id="reg_42",
    client_name="build agent",
    scopes=["repo:read", "tickets.write"],
    jwks=JWKS,
    expires_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    software_id="ci-bot",
)
REPRESENTATION = {
    "clientId": "reg_42",
    "name": "build agent",
    "description": "Managed by Registrar (reg_42)",
    "enabled": True,
    "protocol": "openid-connect",
    "publicClient": False,
    "bearerOnly": False,
    "clientAuthenticatorType": "client-jwt",
    "serviceAccountsEnabled": True,
    "standardFlowEnabled": False,
    "implicitFlowEnabled": False,
    "directAccessGrantsEnabled": False,
    "fullScopeAllowed": False,
    "redirectUris": [],
    "defaultClientScopes": ["repo:read", "tickets.write"],
    "optionalClientScopes": [],
    "attributes": {
        "registrar.id": "reg_42",
        "use.jwks.string": "true",
        "jwks.string": json.dumps(JWKS, sort_keys=True),
        "registrar.expires_at": "2030-01-02T03:04:05+00:00",
        "registrar.software_id": "ci-bot",
    },
}


class FakeKeycloak:
    """Answers a scripted sequence of ``(method, path?query, body, response)``; any other call fails."""

    def __init__(self, *calls):
        self.calls = list(calls)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert self.calls, f"unexpected call {request.method} {request.url}"
        method, target, body, response = self.calls.pop(0)
        assert (request.method, request.url.raw_path.decode()) == (method, target)
        if target.endswith("/token"):
            assert dict(httpx.QueryParams(request.content.decode())) == body
        else:
            assert request.headers["authorization"] == "Bearer admin-at"
            assert (json.loads(request.content) if request.content else None) == body
        return response

    def connector(self, **config):
        return build_connector(
            "keycloak",
            {"base_url": BASE, "realm": "agents", **config},
            {"admin_client_id": "registrar-admin", "admin_client_secret": "kc-admin-secret"},
            5.0,
            transport=httpx.MockTransport(self),
        )

    def assert_done(self):
        assert self.calls == [], f"calls not made: {self.calls}"


def clients(path: str = "") -> str:
    return f"/admin/realms/agents/clients{path}"


def test_create_posts_a_service_account_client_with_the_agent_jwks():
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("POST", clients(), REPRESENTATION, httpx.Response(201, headers={"Location": f"{BASE}{clients('/u-1')}"})),
    )
    connector = fake.connector()
    result = connector.create(SPEC)
    assert (result.client_id, result.remote_state) == ("reg_42", {"id": "u-1"})
    assert connector.issuer == "https://kc.test/realms/agents"
    assert connector.token_endpoint == "https://kc.test/realms/agents/protocol/openid-connect/token"
    fake.assert_done()


def test_create_twice_is_already_exists_naming_the_client():
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("POST", clients(), REPRESENTATION, httpx.Response(409, json={"errorMessage": "Client reg_42 already exists"})),
    )
    with pytest.raises(AlreadyExists) as caught:
        fake.connector().create(SPEC)
    assert caught.value.client_id == "reg_42"
    fake.assert_done()


def test_create_with_a_secret_fetches_the_generated_secret():
    spec = dataclasses.replace(SPEC, token_endpoint_auth_method="client_secret_basic", jwks=None, expires_at=None)
    representation = {
        **REPRESENTATION,
        "clientAuthenticatorType": "client-secret",
        "attributes": {"registrar.id": "reg_42", "registrar.software_id": "ci-bot"},
    }
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("POST", clients(), representation, httpx.Response(201, headers={"Location": f"{BASE}{clients('/u-1')}"})),
        ("GET", clients("/u-1/client-secret"), None, httpx.Response(200, json={"type": "secret", "value": "gen"})),
    )
    assert fake.connector().create(spec).remote_state == {"id": "u-1", "client_secret": "gen"}
    fake.assert_done()


def test_update_puts_the_representation_and_syncs_default_scopes():
    spec = dataclasses.replace(SPEC, scopes=["repo:read", "deploy"])
    fake = FakeKeycloak(
        TOKEN_CALL,
        (
            "PUT",
            clients("/u-1"),
            {**REPRESENTATION, "defaultClientScopes": ["repo:read", "deploy"]},
            httpx.Response(204),
        ),
        (
            "GET",
            clients("/u-1/default-client-scopes"),
            None,
            httpx.Response(200, json=[{"id": "s-r", "name": "repo:read"}, {"id": "s-t", "name": "tickets.write"}]),
        ),
        (
            "GET",
            "/admin/realms/agents/client-scopes",
            None,
            httpx.Response(200, json=[{"id": "s-r", "name": "repo:read"}, {"id": "s-d", "name": "deploy"}]),
        ),
        ("PUT", clients("/u-1/default-client-scopes/s-d"), None, httpx.Response(204)),
        ("DELETE", clients("/u-1/default-client-scopes/s-t"), None, httpx.Response(204)),
    )
    result = fake.connector().update("reg_42", spec, {"id": "u-1"})
    assert result.remote_state == {"id": "u-1"}
    fake.assert_done()


def test_disable_sets_enabled_false():
    fake = FakeKeycloak(
        TOKEN_CALL,
        (
            "GET",
            clients("?clientId=reg_42&search=false"),
            None,
            httpx.Response(200, json=[{"id": "u-1", "clientId": "reg_42"}]),
        ),
        ("PUT", clients("/u-1"), {**REPRESENTATION, "enabled": False}, httpx.Response(204)),
    )
    result = fake.connector().disable("reg_42", SPEC, {})
    assert (result.remote_state, result.deleted) == ({"id": "u-1"}, False)
    fake.assert_done()


def test_get_maps_the_representation():
    fake = FakeKeycloak(
        TOKEN_CALL,
        (
            "GET",
            clients("/u-1"),
            None,
            httpx.Response(200, json={**REPRESENTATION, "id": "u-1", "enabled": False, "secret": "hidden"}),
        ),
    )
    remote = fake.connector().get("reg_42", {"id": "u-1"})
    assert (remote.client_id, remote.registrar_id, remote.enabled) == ("reg_42", "reg_42", False)
    assert remote.scopes == ["repo:read", "tickets.write"]
    assert "secret" not in remote.metadata
    fake.assert_done()


def test_delete_and_delete_of_a_missing_client():
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("DELETE", clients("/u-1"), None, httpx.Response(204)),
        ("DELETE", clients("/u-1"), None, httpx.Response(404, json={"error": "Could not find client"})),
        ("GET", clients("?clientId=reg_42&search=false"), None, httpx.Response(200, json=[])),
    )
    connector = fake.connector()
    connector.delete("reg_42", {"id": "u-1"})
    connector.delete("reg_42", {"id": "u-1"})
    connector.delete("reg_42", {})
    fake.assert_done()


def test_get_of_a_missing_client_is_not_found():
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("GET", clients("/u-1"), None, httpx.Response(404, json={"error": "Could not find client"})),
    )
    with pytest.raises(NotFound):
        fake.connector().get("reg_42", {"id": "u-1"})
    fake.assert_done()


def test_list_pages_with_first_and_max_and_skips_builtins(monkeypatch):
    monkeypatch.setattr("inventory.connectors.keycloak.PAGE_SIZE", 2)
    fake = FakeKeycloak(
        TOKEN_CALL,
        (
            "GET",
            clients("?first=0&max=2"),
            None,
            httpx.Response(
                200, json=[{"clientId": "account"}, {"clientId": "reg_1", "attributes": {"registrar.id": "reg_1"}}]
            ),
        ),
        ("GET", clients("?first=2&max=2"), None, httpx.Response(200, json=[{"clientId": "shadow", "enabled": True}])),
    )
    listed = [(c.client_id, c.registrar_id) for c in fake.connector().list()]
    assert listed == [("reg_1", "reg_1"), ("shadow", None)]
    fake.assert_done()


def test_expired_admin_token_is_refreshed_once():
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("GET", clients("/u-1"), None, httpx.Response(401, json={"error": "HTTP 401 Unauthorized"})),
        TOKEN_CALL,
        ("GET", clients("/u-1"), None, httpx.Response(200, json=REPRESENTATION)),
    )
    assert fake.connector().get("reg_42", {"id": "u-1"}).client_id == "reg_42"
    fake.assert_done()


def test_keycloak_down_is_transient_and_admin_secret_is_not_leaked():
    fake = FakeKeycloak(
        (
            "POST",
            "/realms/agents/protocol/openid-connect/token",
            TOKEN_CALL[2],
            httpx.Response(503, text="upstream kc-admin-secret failure"),
        ),
    )
    with pytest.raises(Transient) as caught:
        fake.connector().create(SPEC)
    assert "kc-admin-secret" not in str(caught.value)
    fake.assert_done()


def test_a_cimd_client_is_created_public_under_its_document_url():
    url = "https://app.example.com/oauth/client.json"
    spec = dataclasses.replace(
        SPEC,
        client_id=url,
        token_endpoint_auth_method="none",
        jwks=None,
        grant_types=["authorization_code"],
        response_types=["code"],
        redirect_uris=["https://app.example.com/cb"],
        scopes=[],
        expires_at=None,
        software_id=None,
    )
    representation = REPRESENTATION | {
        "clientId": url,
        "publicClient": True,
        "clientAuthenticatorType": "client-secret",
        "serviceAccountsEnabled": False,
        "standardFlowEnabled": True,
        "redirectUris": ["https://app.example.com/cb"],
        "defaultClientScopes": [],
        "attributes": {"registrar.id": "reg_42", "pkce.code.challenge.method": "S256"},
    }
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("POST", clients(), representation, httpx.Response(201, headers={"Location": f"{BASE}{clients('/u-9')}"})),
    )
    result = fake.connector(client_id_prefix="rg-").create(spec)  # the URL, never prefixed
    assert (result.client_id, result.remote_state) == (url, {"id": "u-9"})
    fake.assert_done()


def events(query: str) -> str:
    return f"/admin/realms/agents/events?type=CLIENT_LOGIN&{query}"


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_usage_reads_client_login_events_paged_and_skips_builtins_and_its_own_admin_client(monkeypatch):
    monkeypatch.setattr("inventory.connectors.keycloak.PAGE_SIZE", 2)
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    later = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    fake = FakeKeycloak(
        TOKEN_CALL,
        (
            "GET",
            events("dateFrom=2026-03-01&first=0&max=2"),
            None,
            httpx.Response(
                200,
                json=[
                    {"type": "CLIENT_LOGIN", "clientId": "reg_42", "time": ms(later)},
                    {"type": "CLIENT_LOGIN", "clientId": "registrar-admin", "time": ms(later)},
                ],
            ),
        ),
        (
            "GET",
            events("dateFrom=2026-03-01&first=2&max=2"),
            None,
            httpx.Response(
                200,
                json=[
                    {"type": "CLIENT_LOGIN", "clientId": "admin-cli", "time": ms(later)},
                    {"type": "CLIENT_LOGIN", "clientId": "shadow-bot", "time": ms(since)},
                ],
            ),
        ),
        (
            "GET",
            events("dateFrom=2026-03-01&first=4&max=2"),
            None,
            httpx.Response(
                200,
                json=[
                    {"type": "CLIENT_LOGIN", "clientId": "reg_7", "time": ms(since) - 1},  # before `since`
                    {"type": "CLIENT_LOGIN", "clientId": "reg_8", "time": "yesterday"},  # not a time
                ],
            ),
        ),
        ("GET", events("dateFrom=2026-03-01&first=6&max=2"), None, httpx.Response(200, json=[])),
    )
    connector = fake.connector()
    assert connector.can_report_usage
    assert list(connector.usage(since=since)) == [("reg_42", later), ("shadow-bot", since)]
    fake.assert_done()


def test_usage_refuses_a_listing_that_is_not_an_array():
    from inventory.connectors import ConnectorError

    fake = FakeKeycloak(
        TOKEN_CALL,
        ("GET", events("dateFrom=2026-03-01&first=0&max=100"), None, httpx.Response(200, json={"error": "x"})),
    )
    with pytest.raises(ConnectorError, match="events listing is not a JSON array"):
        list(fake.connector().usage(since=datetime(2026, 3, 1, tzinfo=UTC)))
