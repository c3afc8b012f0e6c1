"""A plain RFC 7591 client needs nothing Registrar-specific (issue 17, item 1).

An unmodified client library sends only standard metadata: each omitted Registrar extension (``purpose``,
``internal_only``, ``audiences``, ``requested_ttl``) takes the credential's value or the policy default. Only
a value the client does send can conflict with the credential's ceiling, and only that is refused.
"""

from __future__ import annotations

import pytest
from authlib.oauth2.rfc7591 import ClientMetadataClaims

from approvals.models import RegistrationRequest
from inventory.models import Client
from tests.approvals.intake_support import (  # noqa: F401
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    counts,
    make_token,
    post,
)
from tests.factories import ClientFactory

STANDARD = {
    "client_name": "ticket-summariser",
    "redirect_uris": ["https://agent.example.com/cb"],
    "grant_types": ["authorization_code"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "private_key_jwt",
    "jwks": PUBLIC_JWKS,
    "scope": "tickets:read",
}
RFC7591_FIELDS = {
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "contacts",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "jwks",
    "software_id",
    "software_version",
}


def test_the_body_is_standard_rfc7591_metadata():
    """authlib's own RFC 7591 claims validate it: not one field is Registrar's."""
    assert set(STANDARD) <= RFC7591_FIELDS
    ClientMetadataClaims(STANDARD, {}).validate()


@pytest.mark.django_db(transaction=True)
def test_authlib_client_with_only_standard_fields_registers_on_an_internal_only_token(
    live_server, catalogue, idp, owner
):
    from authlib.integrations.requests_client import OAuth2Session

    token, initial = make_token(owner, internal_only=True, purpose="Summarise support tickets nightly")
    with OAuth2Session(token={"access_token": initial, "token_type": "Bearer"}) as session:
        response = session.post(f"{live_server.url}/oauth2/register", json=STANDARD, timeout=10)
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["internal_only"] is True and info["purpose"] == "Summarise support tickets nightly"
    reg = RegistrationRequest.objects.get()
    assert reg.internal_only is True and reg.risk_tier == "low" and reg.requested_ttl is None
    client = Client.objects.get()
    assert client.internal_only is True and client.purpose == "Summarise support tickets nightly"


@pytest.mark.django_db
def test_omitted_internal_only_takes_the_tokens_value_and_a_conflict_is_refused(client, catalogue, idp, owner):
    _, initial = make_token(owner, internal_only=True)
    before = counts()
    refused = post(client, dict(STANDARD, internal_only=False), initial)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_client_metadata"
    assert "allows only internal-only clients" in refused.json()["error_description"]
    assert Client.objects.count() == before["clients"]
    assert post(client, STANDARD, initial).status_code == 201


@pytest.mark.django_db
def test_omitted_internal_only_on_an_ordinary_token_stays_false(client, catalogue, idp, owner):
    _, initial = make_token(owner, internal_only=False)
    response = post(client, STANDARD, initial)
    assert response.status_code == 202  # not internal-only: medium tier, review
    assert RegistrationRequest.objects.get().internal_only is False


@pytest.mark.django_db
def test_a_spawned_child_takes_its_parents_boundary(client, catalogue, idp, owner):
    from approvals.oauth2.credentials import Requester

    parent = ClientFactory(owner=owner, idp=idp, internal_only=True, audiences=["https://tickets.internal"])
    requester = Requester(via="spawn", owner=owner, actor=None, parent=parent)
    merged = requester.merge({"client_name": "child"})
    assert merged["internal_only"] is True and merged["audiences"] == ["https://tickets.internal"]
    assert requester.merge({"audiences": ["https://other"]})["audiences"] == ["https://other"]
