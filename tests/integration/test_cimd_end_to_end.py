"""End to end against the real OpenID provider (tests/idp/server.mjs) and a local HTTPS document host: an owner
pre-registers a CIMD client → another person approves → the IdP knows the document URL as the client id → a
document change that adds a redirect host is held for review while the IdP keeps the pinned redirect URIs →
once approved, the IdP gets the new ones."""

# ruff: noqa: F811 - the fixtures imported from tests.https_host / tests.provisioning are test parameters here

from __future__ import annotations

import json

import pytest
from django.core.cache import cache

from approvals.choices import RequestKind, RequestState
from approvals.cimd.pinning import pin_check
from approvals.models import CimdPin, RegistrationRequest
from approvals.preregistration import preregister
from approvals.services import request_approve
from inventory.choices import ClientState
from inventory.models import Client, IdPConnection
from inventory.outbox.deliver import deliver_client_outbox
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401
from tests.https_host import https_host, loopback_fetches  # noqa: F401
from tests.provisioning import idp_clients, real_idp  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PATH = "/oauth/e2e-client.json"
CB = "https://app.example.test/callback"


def at_idp(oidc_idp, client_id: str) -> dict:
    return next(c for c in idp_clients(oidc_idp) if c.get("client_id") == client_id)


def test_a_cimd_client_reaches_the_idp_under_its_url_and_a_widening_is_held(
    oidc_idp, real_idp, catalogue, owner, approver, approver2, loopback_fetches, https_host
):
    IdPConnection.objects.update(is_default=False)
    IdPConnection.objects.filter(pk=real_idp.pk).update(is_default=True)
    cache.clear()
    url = https_host.url(PATH, host="app.example.test")
    document = {
        "client_id": url,
        "client_name": "E2E Desk Agent",
        "redirect_uris": [CB],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    https_host.serve(PATH, json.dumps(document))

    done = preregister(submitter=owner, cimd_url=url, governance={"purpose": "Service desk assistant"})
    assert done.reg_request.state == RequestState.PENDING
    request_approve(reg_request=done.reg_request, approver=approver, reason="vendor document reviewed")
    client = Client.objects.get()
    assert deliver_client_outbox(client.pk) is True
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE and client.idp_client_id == url
    assert at_idp(oidc_idp, url)["redirect_uris"] == [CB]

    https_host.serve(PATH, json.dumps(document | {"redirect_uris": [CB, "https://new-host.example.test/cb"]}))
    assert pin_check(pin_id=CimdPin.objects.get().pk).action == "change_requested"
    change = RegistrationRequest.objects.get(kind=RequestKind.CIMD_CHANGE, state=RequestState.PENDING)
    assert at_idp(oidc_idp, url)["redirect_uris"] == [CB]  # the IdP keeps the pinned version

    request_approve(reg_request=change, approver=approver2, reason="new callback host agreed")
    assert deliver_client_outbox(client.pk) is True
    assert at_idp(oidc_idp, url)["redirect_uris"] == [CB, "https://new-host.example.test/cb"]


def test_a_shadow_client_at_the_real_idp_is_adopted_in_place(
    oidc_idp, real_idp, catalogue, owner, approver, security_user
):
    """Registered at the IdP behind Registrar's back → reconciliation records a shadow → security proposes an owner →
    an approver approves → the same IdP client (same id, its secret kept) takes the governed metadata through the
    admin API; the IdP holds no second client."""
    import httpx

    from inventory.reconcile import reconcile_connection
    from tests.approvals.intake_support import PUBLIC_JWKS

    config = dict(real_idp.config, admin_update=True)
    IdPConnection.objects.filter(pk=real_idp.pk).update(config=config)
    real_idp.refresh_from_db()
    registered = httpx.post(
        oidc_idp.registration_endpoint,
        json={
            "client_name": "Legacy reporting bot",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "tickets:read",
        },
        headers={"Authorization": f"Bearer {oidc_idp.initial_access_token}"},
        timeout=10,
    )
    registered.raise_for_status()
    idp_id = registered.json()["client_id"]
    reconcile_connection(idp=real_idp)
    shadow = Client.objects.get(idp_client_id=idp_id)
    assert shadow.managed is False
    held_before = len(idp_clients(oidc_idp))

    metadata = {
        "client_name": "Reporting bot (governed)",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": PUBLIC_JWKS,
    }
    done = preregister(
        submitter=security_user,
        owner=owner,
        adopt=shadow,
        metadata=metadata,
        governance={"purpose": "Nightly ticket report", "scope": "tickets:read"},
    )
    request_approve(reg_request=done.reg_request, approver=approver, reason="known job")
    assert deliver_client_outbox(shadow.pk) is True
    client = Client.objects.get(pk=shadow.pk)
    assert client.managed and client.idp_client_id == idp_id and not client.sync_failed
    at = at_idp(oidc_idp, idp_id)
    assert at["client_name"] == "Reporting bot (governed)" and at["token_endpoint_auth_method"] == "private_key_jwt"
    assert len(idp_clients(oidc_idp)) == held_before  # updated in place, nothing created
