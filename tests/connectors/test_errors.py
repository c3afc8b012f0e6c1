"""HTTP answers and transport failures map onto the shared error types, with secrets censored."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest

from inventory.connectors import (
    AccessDenied,
    AlreadyExists,
    BadRequest,
    ClientSpec,
    NotFound,
    Transient,
    build_connector,
)

CONFIG = {
    "registration_endpoint": "https://idp.test/reg",
    "issuer": "https://idp.test",
    "token_endpoint": "https://idp.test/token",
}
SECRETS = {"initial_access_token": "iat-secret-value"}
STATE = {"registration_access_token": "rat-secret-value", "registration_client_uri": "https://idp.test/reg/c1"}
SPEC = ClientSpec(registrar_id="reg_1", client_name="agent", scopes=["a"], jwks={"keys": []})


def connector_answering(status: int, body=None, headers=None, seen=None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if isinstance(body, Exception):
            raise body
        return httpx.Response(status, json=body, headers=headers)

    return build_connector("rfc7591", CONFIG, SECRETS, 5.0, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_server_errors_and_throttling_are_transient(status):
    connector = connector_answering(status, {"error": "server_error"}, headers={"Retry-After": "7"})
    with pytest.raises(Transient) as caught:
        connector.create(SPEC)
    assert caught.value.status_code == status
    assert caught.value.retry_after == 7.0


def test_timeouts_are_transient():
    connector = connector_answering(0, httpx.ReadTimeout("slow"))
    with pytest.raises(Transient, match="timed out"):
        connector.create(SPEC)


def test_connection_refused_is_transient():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {**CONFIG, "registration_endpoint": f"http://127.0.0.1:{port}/reg"}
    connector = build_connector("rfc7591", config, SECRETS, 2.0)
    with pytest.raises(Transient, match="ConnectError"):
        connector.create(SPEC)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequest), (401, BadRequest), (403, BadRequest), (422, BadRequest), (404, NotFound), (409, AlreadyExists)],
)
def test_client_errors(status, error):
    with pytest.raises(error) as caught:
        connector_answering(status, {"error": "nope"}).create(SPEC)
    assert caught.value.status_code == status
    assert caught.value.detail == {"error": "nope"}


def test_delete_tolerates_404_for_unknown_clients():
    seen: list[httpx.Request] = []
    connector_answering(404, {"error": "not_found"}, seen=seen).delete("c1", STATE)
    assert [(r.method, str(r.url), r.headers["authorization"]) for r in seen] == [
        ("DELETE", "https://idp.test/reg/c1", "Bearer rat-secret-value"),
    ]


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("operation", ["delete", "get", "update"])
def test_a_refused_management_token_without_a_listing_is_access_denied_never_gone(status, operation):
    """RFC 7592 answers an unknown client with 401, but so does a stale or revoked token: without a listing
    to ask, a refused token is a failure for a person, not "already gone"."""
    connector = connector_answering(status, {"error": "invalid_token"})
    assert connector.can_list is False
    call = {
        "delete": lambda: connector.delete("c1", STATE),
        "get": lambda: connector.get("c1", STATE),
        "update": lambda: connector.update("c1", SPEC, STATE),
    }[operation]
    with pytest.raises(AccessDenied, match="cannot tell a deleted client from a stale or revoked token") as caught:
        call()
    assert caught.value.status_code == status
    assert "rat-secret-value" not in str(caught.value)


def test_a_refused_management_token_with_a_listing_is_gone_only_when_the_listing_agrees():
    listed: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/admin/clients":
            return httpx.Response(200, json={"clients": listed, "total": len(listed)})
        return httpx.Response(401, json={"error": "invalid_token"})

    config = {**CONFIG, "list_endpoint": "https://idp.test/admin/clients", "admin_delete": False}
    connector = build_connector(
        "rfc7591", config, {**SECRETS, "admin_token": "adm"}, 5.0, transport=httpx.MockTransport(handler)
    )
    assert connector.can_list is True
    connector.delete("c1", STATE)  # not listed: really gone
    listed.append({"client_id": "c1", "grant_types": ["client_credentials"]})
    with pytest.raises(AccessDenied, match="still lists the client"):
        connector.delete("c1", STATE)


def test_transient_errors_say_whether_the_request_can_have_taken_effect():
    for status, reached in ((429, False), (503, False), (500, True), (502, True), (504, True)):
        with pytest.raises(Transient) as caught:
            connector_answering(status, {"error": "x"}).create(SPEC)
        assert caught.value.reached_idp is reached, status
    for error, reached in (
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("cut"), True),
    ):
        with pytest.raises(Transient) as caught:
            connector_answering(0, error).create(SPEC)
        assert caught.value.reached_idp is reached, error


def test_get_of_an_unknown_client_is_not_found():
    with pytest.raises(NotFound):
        connector_answering(404, {"error": "not_found"}).get("c1", STATE)


def test_bad_request_body_is_censored(caplog):
    body = {
        "error": "invalid_client_metadata",
        "error_description": "token iat-secret-value is not valid for rat-secret-value",
        "registration_access_token": "echoed",
        "client_secret": "shh",
    }
    caplog.set_level(logging.DEBUG, logger="inventory.connectors")
    with pytest.raises(BadRequest) as caught:
        connector_answering(400, body).update("c1", SPEC, STATE)
    detail = caught.value.detail
    assert detail == {
        "error": "invalid_client_metadata",
        "error_description": "token ******** is not valid for ********",
        "registration_access_token": "********",
        "client_secret": "********",
    }
    for secret in ("iat-secret-value", "rat-secret-value", "echoed", "shh"):
        assert secret not in str(caught.value)
        assert secret not in caplog.text
    assert "connector_request kind=rfc7591 method=PUT url=https://idp.test/reg/c1" in caplog.text


def test_update_sends_a_full_rfc7592_replacement():
    seen: list[httpx.Request] = []
    answer = {
        "client_id": "c1",
        "registration_access_token": "rotated",
        "registration_client_uri": STATE["registration_client_uri"],
    }
    result = connector_answering(200, answer, seen=seen).update("c1", SPEC, STATE)
    (request,) = seen
    assert request.method == "PUT"
    assert json.loads(request.content) == {
        "client_id": "c1",
        "client_name": "agent",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "private_key_jwt",
        "software_id": "reg_1",
        "scope": "a",
        "jwks": {"keys": []},
        "registrar_id": "reg_1",
    }
    assert result.remote_state["registration_access_token"] == "rotated"
