"""censor(), the registry and the dry-run connector."""

from __future__ import annotations

import pytest

from inventory.connectors import (
    BaseConnector,
    ClientSpec,
    Misconfigured,
    available_kinds,
    build_connector,
    censor,
    get_connector_class,
    register,
)
from inventory.connectors.dryrun import DryRunConnector
from inventory.connectors.keycloak import KeycloakConnector
from inventory.connectors.rfc7591 import Rfc7591Connector


def test_censor_hides_secrets_by_key_and_value_but_keeps_endpoints():
    value = {
        "initial_access_token": "t1",
        "admin_client_secret": "s1",
        "Authorization": "Bearer t2",
        "password": "p",
        "private_key": "k",
        "token_endpoint": "https://idp/token",
        "token_endpoint_auth_method": "private_key_jwt",
        "client_secret_expires_at": 0,
        "jwks": {"keys": [{"kty": "EC", "x": "X", "d": "PRIVATE"}]},
        "nested": [{"refresh_token": "r"}, "says abcdef-secret"],
        "empty_secret": "",
    }
    assert censor(value, secret_values=["abcdef-secret"]) == {
        "initial_access_token": "********",
        "admin_client_secret": "********",
        "Authorization": "********",
        "password": "********",
        "private_key": "********",
        "token_endpoint": "https://idp/token",
        "token_endpoint_auth_method": "private_key_jwt",
        "client_secret_expires_at": 0,
        "jwks": {"keys": [{"kty": "EC", "x": "X", "d": "********"}]},
        "nested": [{"refresh_token": "********"}, "says ********"],
        "empty_secret": "",
    }


def test_registry():
    assert available_kinds() == ["dry-run", "keycloak", "rfc7591"]
    assert get_connector_class("rfc7591") is Rfc7591Connector
    assert get_connector_class("keycloak") is KeycloakConnector
    with pytest.raises(Misconfigured, match="unknown connector kind 'okta'"):
        get_connector_class("okta")
    register(DryRunConnector)  # re-registering the same class is harmless

    class Impostor(DryRunConnector):
        kind = "dry-run"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert issubclass(get_connector_class("dry-run"), BaseConnector)


def test_missing_configuration_fails_fast():
    with pytest.raises(Misconfigured, match="issuer, token_endpoint, initial_access_token"):
        build_connector("rfc7591", {"registration_endpoint": "https://idp/reg"}, {})


def test_dry_run_records_and_invents_ids():
    connector = build_connector("dry-run", {}, {})
    spec = ClientSpec(registrar_id="reg_9", client_name="x", scopes=["a"], extra={"client_secret": "s"})
    created = connector.create(spec)
    assert created.client_id == "dryrun-reg_9"
    assert connector.get(created.client_id, created.remote_state).scopes == ["a"]
    connector.disable(created.client_id, spec, created.remote_state)
    assert connector.get(created.client_id, {}).enabled is False
    connector.delete(created.client_id, {})
    assert [call[0] for call in connector.calls] == ["create", "disable", "delete"]
    assert connector.calls[0][2]["extra"] == {"client_secret": "********"}
    assert list(connector.list()) == []
    assert connector.issuer == "https://dry-run.invalid"
