"""``jwks_uri`` at registration and on RFC 7592 PUT: Registrar fetches it through the safe fetcher, checks the
keys like an inline ``jwks``, and gives the IdP the vetted key set; anything else is a 400 naming the reason."""

# ruff: noqa: F811 - fixtures imported from tests.https_host are test parameters here

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey

from approvals.models import RegistrationRequest
from approvals.services import request_approve
from inventory.keys import jwks_thumbprints
from inventory.models import Client, OutboxEntry
from inventory.outbox.push import client_spec
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    call,
    counts,
    low_body,
    make_token,
    path_of,
    post,
)
from tests.https_host import https_host, loopback_fetches  # noqa: F401

pytestmark = pytest.mark.django_db

AGENT_KEY = ECKey.generate_key("P-256", parameters={"kid": "agent-2026-12"})
AGENT_JWKS = {"keys": [AGENT_KEY.as_dict(private=False)]}


@pytest.fixture
def plaintext(catalogue, idp, owner):
    return make_token(owner)[1]


def uri_body(jwks_uri: str, **overrides) -> dict:
    return low_body(jwks=None, jwks_uri=jwks_uri, **overrides)


def _refused(response, fragment: str) -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_client_metadata", body
    assert fragment in body["error_description"], body["error_description"]
    return body["error_description"]


# --- registration -------------------------------------------------------------------------------------


def test_keys_behind_jwks_uri_are_fetched_vetted_and_given_to_the_idp(client, plaintext, loopback_fetches, https_host):
    uri = https_host.serve("/agent/jwks.json", AGENT_JWKS, headers={"Content-Type": "application/jwk-set+json"})
    response = post(client, uri_body(uri), plaintext)

    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["jwks_uri"] == uri and "jwks" not in answer  # the agent's metadata, as registered
    created = Client.objects.get()
    assert created.jwks == AGENT_JWKS and created.jwks_uri == uri
    assert RegistrationRequest.objects.get().fetched_jwks == AGENT_JWKS
    spec = client_spec(created)
    assert spec.jwks == AGENT_JWKS and spec.jwks_uri is None  # the IdP never fetches the URI itself
    keys = AuditEvent.objects.get(action="registration.accepted").after["keys"]
    assert keys == {
        "source": "jwks_uri",
        "jwks_uri": uri,
        "fetched_from": "127.0.0.1",
        "thumbprints": [AGENT_KEY.thumbprint()],
    }
    assert https_host.hits("/agent/jwks.json") == 1


def test_inline_keys_are_recorded_by_thumbprint(client, plaintext):
    response = post(client, low_body(), plaintext)
    assert response.status_code == 201, response.content
    keys = AuditEvent.objects.get(action="registration.accepted").after["keys"]
    assert keys == {"source": "jwks", "thumbprints": jwks_thumbprints(PUBLIC_JWKS)}


@pytest.mark.parametrize(
    ("jwks_uri", "fragment"),
    [
        (
            "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "169.254.169.254 is a link-local address (RFC 3927), where cloud metadata services answer",
        ),
        ("https://127.0.0.1:5432/", "127.0.0.1 is a loopback address (RFC 1122)"),
    ],
)
def test_jwks_uri_on_a_special_use_address_is_refused(client, plaintext, jwks_uri, fragment):
    """Regression: these were accepted (201, auto-approved) and handed to the IdP to fetch."""
    before = counts()
    description = _refused(post(client, uri_body(jwks_uri), plaintext), fragment)
    assert description.startswith("jwks_uri could not be fetched: ")
    assert "only public addresses are fetched" in description
    # A refusal like any other: the refused request and its audit event, no client, the token not used.
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    request = RegistrationRequest.objects.get()
    assert request.state == "refused" and request.reasons[0]["code"] == "invalid_jwks_uri"
    assert request.token.uses == 0


def test_a_name_resolving_to_the_metadata_service_is_refused(client, plaintext, loopback_fetches, https_host):
    loopback_fetches.names["keys.example.test"] = ["169.254.169.254"]
    uri = https_host.serve("/jwks.json", AGENT_JWKS).replace("localhost", "keys.example.test")
    _refused(post(client, uri_body(uri), plaintext), "keys.example.test resolves to 169.254.169.254")
    assert not Client.objects.exists() and https_host.hits("/jwks.json") == 0


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ({"status": 302, "headers": {"Location": "https://169.254.169.254/"}}, "the server answered 302 (a redirect"),
        ({"status": 404, "body": "{}"}, "the server answered 404; only 200 is accepted"),
        ({"body": b'{"keys": ['}, "the document at jwks_uri is not valid JSON"),
        (
            {"body": {"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}},
            "jwks_uri document.keys[0] contains private key material (d)",
        ),
        ({"body": {"keys": []}}, "jwks_uri document.keys must contain at least one key"),
        ({"body": b"x" * 70_000}, "at most 65536 are accepted"),
    ],
)
def test_a_hostile_key_document_is_refused_with_its_reason(
    client, plaintext, loopback_fetches, https_host, answer, fragment
):
    uri = https_host.serve("/jwks.json", **answer)
    _refused(post(client, uri_body(uri), plaintext), fragment)
    assert not Client.objects.exists() and not OutboxEntry.objects.exists()


def test_http_jwks_uri_is_refused_before_any_fetch(client, plaintext):
    _refused(
        post(client, uri_body("http://keys.example.com/jwks.json"), plaintext), "jwks_uri must be an absolute https URI"
    )


def test_a_reviewed_request_gets_the_keys_fetched_at_registration(
    client, plaintext, loopback_fetches, https_host, approver
):
    uri = https_host.serve("/jwks.json", AGENT_JWKS)
    response = post(client, uri_body(uri, scope="tickets:read crm:read"), plaintext)
    assert response.status_code == 202, response.content
    https_host.serve("/jwks.json", {"keys": [ECKey.generate_key("P-256").as_dict(private=False)]})  # swapped since
    request_approve(request=RegistrationRequest.objects.get(), approver=approver, reason="fine")
    created = Client.objects.get()
    assert created.jwks == AGENT_JWKS and created.jwks_uri == uri  # what was vetted, not what is there now


# --- RFC 7592 PUT ---------------------------------------------------------------------------------------


@pytest.fixture
def registered(client, plaintext):
    response = post(client, low_body(), plaintext)
    assert response.status_code == 201, response.content
    body = response.json()
    return path_of(body["registration_client_uri"]), body["registration_access_token"]


@pytest.mark.parametrize(
    ("jwks_uri", "fragment"),
    [
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("https://127.0.0.1:5432/", "127.0.0.1 is a loopback address"),
    ],
)
def test_put_cannot_swap_vetted_keys_for_a_special_use_jwks_uri(client, registered, jwks_uri, fragment):
    """Regression: a PUT swapped the vetted inline jwks for such a URI (200) and the IdP was told to fetch it."""
    uri, rat = registered
    before, snapshot = counts(), Client.objects.values().get()
    _refused(call(client, "PUT", uri, rat, uri_body(jwks_uri)), fragment)
    assert counts() == before and Client.objects.values().get() == snapshot
    assert Client.objects.get().jwks == PUBLIC_JWKS
    assert call(client, "GET", uri, rat).status_code == 200  # the token was not used up by the refusal


def test_put_to_a_public_jwks_uri_fetches_and_rotates_the_keys(client, registered, loopback_fetches, https_host):
    uri, rat = registered
    jwks_uri = https_host.serve("/rotated.json", AGENT_JWKS)
    response = call(client, "PUT", uri, rat, uri_body(jwks_uri))
    assert response.status_code == 200, response.content
    assert response.json()["jwks_uri"] == jwks_uri and "jwks" not in response.json()
    created = Client.objects.get()
    assert created.jwks == AGENT_JWKS and created.jwks_uri == jwks_uri
    event = AuditEvent.objects.get(action="client.narrow")
    assert event.before["keys"]["thumbprints"] == jwks_thumbprints(PUBLIC_JWKS)
    assert event.after["keys"]["thumbprints"] == [AGENT_KEY.thumbprint()] and event.after["key_rotated"] is True
    assert client_spec(created).jwks_uri is None


def test_put_refetches_the_same_jwks_uri(client, plaintext, loopback_fetches, https_host):
    jwks_uri = https_host.serve("/jwks.json", AGENT_JWKS)
    created = post(client, uri_body(jwks_uri), plaintext).json()
    uri, rat = path_of(created["registration_client_uri"]), created["registration_access_token"]
    rotated = {"keys": [ECKey.generate_key("P-256").as_dict(private=False)]}
    https_host.serve("/jwks.json", rotated)
    response = call(client, "PUT", uri, rat, uri_body(jwks_uri))
    assert response.status_code == 200, response.content
    assert Client.objects.get().jwks == rotated and https_host.hits("/jwks.json") == 2
