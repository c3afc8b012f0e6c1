"""The 201 contract against the real OpenID provider: when Registrar answers 201, the client exists at the IdP.

The agent registers through ``/oauth2/register`` (inline delivery to oidc-provider on loopback), uses the
``client_id``, ``issuer`` and ``token_endpoint`` from the answer to get an access token with private_key_jwt,
then deletes itself through RFC 7592; once the outbox delivers, the IdP refuses it.
"""

from __future__ import annotations

import pytest

from inventory.choices import ClientState
from inventory.models import Client, IdPConnection
from inventory.outbox.deliver import deliver_client_outbox
from tests.agents import Agent
from tests.approvals.intake_support import _fresh_limits_and_policy, call, low_body, make_token, path_of, post  # noqa: F401
from tests.provisioning import markers_at_idp, real_idp  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_201_means_the_client_works_at_the_idp(client, catalogue, owner, oidc_idp, real_idp, settings):  # noqa: F811
    settings.REGISTRAR_INLINE_DELIVERY_TIMEOUT = 15.0  # a loaded test machine must not turn this into a 202
    IdPConnection.objects.filter(pk=real_idp.pk).update(is_default=True)
    agent = Agent()
    _, plaintext = make_token(owner)

    response = post(client, low_body(jwks=agent.jwks, scope="tickets:read"), plaintext)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["issuer"] == oidc_idp.issuer and body["token_endpoint"] == oidc_idp.token_endpoint
    assert "dry_run" not in body
    registered = Client.objects.get()
    assert body["client_id"] == registered.idp_client_id and registered.state == ClientState.ACTIVE
    assert markers_at_idp(oidc_idp)[registered.registration_id] == 1
    granted = agent.client_credentials(oidc_idp, body["client_id"], "tickets:read")
    assert granted.status_code == 200, granted.text

    deleted = call(client, "DELETE", path_of(body["registration_client_uri"]), body["registration_access_token"])
    assert deleted.status_code == 204
    assert deliver_client_outbox(registered.pk) is True
    assert markers_at_idp(oidc_idp)[registered.registration_id] == 0
    refused = agent.client_credentials(oidc_idp, body["client_id"], "tickets:read")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
