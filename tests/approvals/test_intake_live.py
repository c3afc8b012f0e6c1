"""A real HTTP client against a real server: register (RFC 7591), then read, narrow and delete (RFC 7592).

Uses ``requests`` over a socket to Django's live server, the way an agent's RFC 7591 client code does
(no Django test client, no shared process state), so headers, status codes and JSON are what goes over
the wire.
"""

from __future__ import annotations

import pytest
import requests

from inventory.choices import ClientState
from inventory.models import Client
from tests.approvals.intake_support import _fresh_limits_and_policy, low_body, make_token  # noqa: F401


@pytest.mark.django_db(transaction=True)
def test_register_read_narrow_delete_over_http(live_server, catalogue, idp, owner):
    _, initial_token = make_token(owner)
    http = requests.Session()

    # RFC 7591 §3.1: POST the metadata with the initial access token
    registration = http.post(
        f"{live_server.url}/oauth2/register",
        json=low_body(scope="tickets:read docs:read", requested_ttl=7200),
        headers={"Authorization": f"Bearer {initial_token}", "Accept": "application/json"},
        timeout=10,
    )
    assert registration.status_code == 201, registration.text
    assert registration.headers["Content-Type"] == "application/json"
    assert registration.headers["Cache-Control"] == "no-store"
    info = registration.json()
    assert info["client_id"].startswith("dryrun-reg_")
    uri = info["registration_client_uri"]
    assert uri.startswith(live_server.url + "/oauth2/register/reg_")
    token = info["registration_access_token"]

    # RFC 7592 §2.1: read
    read = http.get(uri, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert read.status_code == 200, read.text
    assert read.json()["client_id"] == info["client_id"]
    token = read.json()["registration_access_token"]

    # RFC 7592 §2.2: update — the full metadata, narrowed
    narrowed = dict(read.json())
    for field in ("registration_access_token", "registration_client_uri", "client_id_issued_at", "expires_at"):
        narrowed.pop(field)
    narrowed.update(scope="tickets:read", requested_ttl=1800)
    update = http.put(uri, json=narrowed, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert update.status_code == 200, update.text
    assert update.json()["scope"] == "tickets:read"
    token = update.json()["registration_access_token"]

    widen = dict(narrowed, scope="tickets:read tickets:write")
    refused = http.put(uri, json=widen, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_client_metadata"
    assert "widening needs a new registration" in refused.json()["error_description"]

    # RFC 7592 §2.3: delete
    deleted = http.delete(uri, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = http.get(uri, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert gone.status_code == 401
    assert gone.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')

    http.close()
    client = Client.objects.get()
    assert client.state == ClientState.RETIRED and client.scopes == ["tickets:read"]


@pytest.mark.django_db(transaction=True)
def test_authlib_client_registers(live_server, catalogue, idp, owner):
    """authlib's OAuth2Session (an RFC 6749 client library) speaks to the endpoint like any agent would."""
    from authlib.integrations.requests_client import OAuth2Session

    _, initial_token = make_token(owner)
    session = OAuth2Session(token={"access_token": initial_token, "token_type": "Bearer"})
    response = session.post(f"{live_server.url}/oauth2/register", json=low_body(scope="tickets:write"), timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    poll = OAuth2Session(token={"access_token": response.json()["registration_access_token"], "token_type": "Bearer"})
    assert poll.get(response.json()["registration_client_uri"], timeout=10).status_code == 202
    session.close()
    poll.close()


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_never_exceed_max_uses(live_server, catalogue, idp, owner):
    """12 agents race for a 3-use token on real PostgreSQL connections: exactly 3 get in, the rest get 401."""
    from concurrent.futures import ThreadPoolExecutor

    from approvals.models import InitialAccessToken, RegistrationRequest

    token, plaintext = make_token(owner, max_uses=3)

    def register(i: int) -> int:
        with requests.Session() as http:
            response = http.post(
                f"{live_server.url}/oauth2/register",
                json=low_body(client_name=f"racer-{i}", scope="tickets:write"),
                headers={"Authorization": f"Bearer {plaintext}"},
                timeout=30,
            )
            return response.status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = sorted(pool.map(register, range(12)))
    assert statuses.count(202) == 3 and statuses.count(401) == 9, statuses
    assert InitialAccessToken.objects.get(pk=token.pk).uses == 3
    assert RegistrationRequest.objects.count() == 3
