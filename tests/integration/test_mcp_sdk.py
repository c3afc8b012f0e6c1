"""The official MCP Python SDK (``mcp`` on PyPI) as the client, end to end (issue 17).

The demo IdP (tests/idp/server.mjs) advertises Registrar's ``/oauth2/register`` as its registration endpoint.
The SDK discovers the authorization server metadata, registers anonymously through the advertised endpoint with
its own request builder and response parser, registers again and gets the same client back (coalescing), then
completes the authorization-code + PKCE flow at the IdP and gets a token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from approvals.models import AnonymousProfile, RegistrationRequest
from inventory.choices import CreatedVia
from inventory.models import Client, IdPConnection, ScopeDefinition
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401
from tests.idp_server import IdPProcess
from tests.provisioning import connection_for

pytestmark = [pytest.mark.integration]

REDIRECT = "http://127.0.0.1:33418/callback"
USER = {"sub": "u-ada", "username": "ada", "password": "correct horse battery", "email": "ada@example.com"}


async def _discover_and_register(issuer: str, client_metadata):
    import httpx2  # the HTTP library the SDK is built on: its requests are httpx2 requests
    from mcp.client.auth.utils import (
        build_oauth_authorization_server_metadata_discovery_urls,
        create_client_registration_request,
        handle_auth_metadata_response,
        handle_registration_response,
    )

    async with httpx2.AsyncClient(timeout=30) as http:
        metadata = None
        for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
            ok, found = await handle_auth_metadata_response(await http.get(url))
            if found is not None:
                metadata = found
                break
            if not ok:
                break
        assert metadata is not None, "no authorization server metadata found"
        infos = []
        for _ in range(2):
            request = create_client_registration_request(metadata, client_metadata, issuer)
            response = await http.send(request)
            infos.append(await handle_registration_response(response))
        return metadata, infos


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorization_code(issuer: str, authorization_endpoint: str, client_id: str, challenge: str) -> str:
    """Sign in at the IdP as a person would and return the code sent to the redirect URI."""
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        response = browser.get(
            authorization_endpoint,
            params={
                "client_id": client_id,
                "redirect_uri": REDIRECT,
                "response_type": "code",
                "scope": "openid",
                "state": "s1",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        for _ in range(10):
            assert response.status_code in (302, 303), response.text
            location = httpx.URL(response.headers["location"])
            if not location.is_absolute_url:
                location = httpx.URL(issuer).join(location)
            if str(location).startswith(REDIRECT):
                query = parse_qs(urlsplit(str(location)).query)
                assert "code" in query, query
                return query["code"][0]
            if location.path.startswith("/interaction/"):
                page = browser.get(location)
                assert page.status_code == 200 and "Company sign-in" in page.text
                response = browser.post(
                    f"{location}/login", data={"username": USER["username"], "password": USER["password"]}
                )
            else:
                response = browser.get(location)
    raise AssertionError("the authorization flow did not reach the redirect URI")


@pytest.mark.django_db(transaction=True)
def test_mcp_sdk_discovers_registers_anonymously_twice_and_gets_a_token(live_server, owner, team):
    from mcp.shared.auth import OAuthClientMetadata

    for name in ("openid", "tickets:read"):
        ScopeDefinition.objects.create(name=name, sensitivity="low", category="internal_tool")
    with IdPProcess(
        users=[USER],
        extra_env={"IDP_REGISTRATION_ENDPOINT": f"{live_server.url}/oauth2/register", "IDP_AUTO_CONSENT": "on"},
    ) as process:
        idp = connection_for(process, name="demo-idp", is_default=True)
        IdPConnection.objects.exclude(pk=idp.pk).update(is_default=False)
        AnonymousProfile.objects.create(
            idp=idp, name="mcp", enabled=True, owner=owner, team=team, allowed_scopes=["openid", "tickets:read"]
        )
        client_metadata = OAuthClientMetadata(
            redirect_uris=[REDIRECT],
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            client_name="MCP SDK e2e client",
            scope="openid tickets:read",
        )
        metadata, (first, second) = asyncio.run(_discover_and_register(process.issuer, client_metadata))

        assert str(metadata.issuer).rstrip("/") == process.issuer  # the IdP's own issuer, not Registrar's
        assert str(metadata.registration_endpoint) == f"{live_server.url}/oauth2/register"
        assert metadata.client_id_metadata_document_supported is True  # CIMD through Registrar (docs/cimd.md)
        assert first.client_id == second.client_id and first.client_id
        client = Client.objects.get()
        assert client.created_via == CreatedVia.ANONYMOUS and client.idp_client_id == first.client_id
        assert RegistrationRequest.objects.get().coalesced_count == 1

        verifier, challenge = _pkce()
        code = _authorization_code(process.issuer, str(metadata.authorization_endpoint), first.client_id, challenge)
        token = httpx.post(
            str(metadata.token_endpoint),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": first.client_id,
                "code_verifier": verifier,
            },
            timeout=30,
        )
        assert token.status_code == 200, token.text
        assert token.json()["access_token"] and token.json()["token_type"].lower() == "bearer"
        # PKCE is enforced: the same flow without the verifier is refused
        code = _authorization_code(process.issuer, str(metadata.authorization_endpoint), first.client_id, challenge)
        refused = httpx.post(
            str(metadata.token_endpoint),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": first.client_id,
            },
            timeout=30,
        )
        assert refused.status_code == 400


def test_the_demo_idp_advertises_registrar_and_cimd_only_when_registrar_is_in_front():
    """Both discovery documents name Registrar's endpoint and CIMD support; without Registrar in front, neither."""
    paths = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
    endpoint = "http://127.0.0.1:9/oauth2/register"
    with IdPProcess(extra_env={"IDP_REGISTRATION_ENDPOINT": endpoint}) as process:
        for path in paths:
            document = httpx.get(process.issuer + path, timeout=10).json()
            assert document["registration_endpoint"] == endpoint, path
            assert document["client_id_metadata_document_supported"] is True, path
            assert document["issuer"].rstrip("/") == process.issuer
    with IdPProcess() as process:
        for path in paths:
            document = httpx.get(process.issuer + path, timeout=10).json()
            assert document["registration_endpoint"] != endpoint, path  # the provider's own /reg
            assert "client_id_metadata_document_supported" not in document, path
