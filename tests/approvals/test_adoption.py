"""Adopting a shadow client (docs/cimd.md "Adopting shadow clients"): a client reconciliation found at the IdP is
proposed for an owner through pre-registration, reviewed like any other request, and on approval becomes managed
in place — the same Client row and the same client at the IdP, updated through the outbox, never recreated."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache

from approvals.choices import RequestKind, RequestState
from approvals.models import RegistrationRequest
from approvals.preregistration import PreregistrationInvalid, preregister
from approvals.services import DecisionConflict, DecisionForbidden, request_approve, request_deny
from inventory.choices import ClientState, CreatedVia, OutboxOperation, OutboxStatus
from inventory.connectors.base import RemoteClient
from inventory.models import Client, OutboxEntry
from inventory.outbox.deliver import deliver_client_outbox
from inventory.reconcile import RECONCILE_ACTOR, _record_unmanaged
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    counts,
)
from tests.approvals.test_requests_api import api_for
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db

API = "/api/v1/registrations/"
PAGE = "/inventory/new/"


@pytest.fixture(autouse=True)
def _setup(catalogue, idp):
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def shadow(idp):
    """A client the IdP holds that Registrar never registered, recorded as reconciliation records it."""
    remote = RemoteClient(
        client_id="legacy-reporting-bot",
        registrar_id=None,
        enabled=True,
        scopes=["tickets:read"],
        metadata={
            "client_id": "legacy-reporting-bot",
            "client_name": "Legacy reporting bot",
            "client_secret": "s3cr3t-from-the-idp",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": PUBLIC_JWKS,
            "scope": "tickets:read",
        },
    )
    return _record_unmanaged(idp, remote, RECONCILE_ACTOR)


def post(api, body):
    return api.post(API, data=json.dumps(body), content_type="application/json")


def adopt_body(shadow, **extra) -> dict:
    return {"adopt": shadow.registration_id, "owner": "olivia", "purpose": "Nightly ticket report", **extra}


def test_security_proposes_an_owner_and_an_approver_adopts_it_in_place(security_user, owner, approver, shadow):
    before = Client.objects.count()
    response = post(api_for(security_user), adopt_body(shadow, requested_ttl=7200))
    assert response.status_code == 201, response.content
    body = response.json()
    req = RegistrationRequest.objects.get()
    assert body["kind"] == "adoption" == req.kind and body["state"] == "pending" == req.state
    assert body["client_id"] == shadow.registration_id and req.client_id == shadow.pk
    assert req.via == CreatedVia.PRE_REGISTRATION and req.submitted_by_id == security_user.pk
    assert req.owner_id == owner.pk and "shadow_adoption" in [r["code"] for r in req.reasons]
    assert "client_secret" not in req.metadata and "client_id" not in req.metadata  # what the IdP said, minus ids
    assert req.metadata["client_name"] == "Legacy reporting bot"
    pending = AuditEvent.objects.get(action="registration.pending", object_id=req.public_id)
    assert pending.after["adopts"] == shadow.registration_id
    # still a shadow while it waits
    assert Client.objects.get(pk=shadow.pk).managed is False

    # the submitter cannot approve it, even with approver rights
    security_user.roles = ["security", "approver"]
    security_user.save()
    with pytest.raises(DecisionForbidden):
        request_approve(reg_request=req, approver=security_user, reason="mine")

    events_before = AuditEvent.objects.count()
    approved = request_approve(reg_request=req, approver=approver, reason="known reporting job")
    assert approved.state == RequestState.APPROVED
    assert Client.objects.count() == before  # no second client
    client = Client.objects.get(pk=shadow.pk)
    assert client.managed is True and client.owner_id == owner.pk
    assert client.created_via == CreatedVia.PRE_REGISTRATION and client.policy_version == req.policy_version
    assert client.idp_client_id == "legacy-reporting-bot" and client.registration_id == shadow.registration_id
    assert client.purpose == "Nightly ticket report" and client.scopes == ["tickets:read"]
    assert client.expires_at is not None and client.ceiling_ttl_seconds == req.granted_ttl
    assert client.state == ClientState.ACTIVE
    adopt_events = AuditEvent.objects.filter(action="client.adopt", object_id=client.registration_id)
    assert adopt_events.count() == 1
    assert adopt_events.get().after["request"] == req.public_id and adopt_events.get().before["managed"] is False
    # the adoption event and the approval of the request; nothing else
    assert AuditEvent.objects.count() == events_before + 2
    assert AuditEvent.objects.filter(action="client.create").count() == 0

    # the IdP client is updated in place: one UPDATE, no CREATE
    entries = list(OutboxEntry.objects.filter(client=client).values_list("operation", flat=True))
    assert entries == [OutboxOperation.UPDATE]
    assert deliver_client_outbox(client.pk) is True
    assert OutboxEntry.objects.get(client=client).status == OutboxStatus.DONE
    assert Client.objects.get(pk=shadow.pk).idp_client_id == "legacy-reporting-bot"
    assert Client.objects.count() == before


def test_a_denied_adoption_leaves_the_shadow_a_shadow(admin_user, owner, approver, shadow):
    api = api_for(admin_user)
    response = post(api, adopt_body(shadow))
    assert response.status_code == 201, response.content
    req = RegistrationRequest.objects.get()
    request_deny(reg_request=req, approver=approver, reason="nobody knows this bot; remove it instead")
    client = Client.objects.get(pk=shadow.pk)
    assert client.managed is False and client.owner_id is None and client.created_via == CreatedVia.DISCOVERED
    assert not OutboxEntry.objects.filter(client=client).exists()
    assert not AuditEvent.objects.filter(action="client.adopt").exists()
    # and it may be proposed again once that one is decided
    assert post(api, adopt_body(shadow)).status_code == 201


def test_a_managed_client_cannot_be_adopted_and_nothing_is_written(security_user, owner):
    managed = ClientFactory(owner=owner)
    before = counts()
    response = post(api_for(security_user), adopt_body(managed))
    assert response.status_code == 400
    assert response.json()["error"] == "not_adoptable"
    assert "already managed by Registrar" in response.json()["error_description"]
    assert counts() == before


def test_an_unknown_client_is_a_400(security_user, owner):
    before = counts()
    response = post(api_for(security_user), {"adopt": "reg_nope", "owner": "olivia", "purpose": "x"})
    assert response.status_code == 400 and "no client 'reg_nope'" in response.content.decode()
    assert counts() == before


def test_a_second_pending_adoption_of_one_shadow_is_refused(security_user, admin_user, owner, shadow):
    assert post(api_for(security_user), adopt_body(shadow)).status_code == 201
    first = RegistrationRequest.objects.get()
    before = counts()
    response = post(api_for(admin_user), adopt_body(shadow, purpose="Someone else's idea"))
    assert response.status_code == 400
    assert response.json()["error"] == "adoption_pending" and first.public_id in response.json()["error_description"]
    assert counts() == before


def test_the_database_keeps_one_pending_adoption_per_shadow(security_user, owner, shadow):
    """The check before the insert can race; the partial unique index cannot."""
    post(api_for(security_user), adopt_body(shadow))
    first = RegistrationRequest.objects.get()
    from django.db import IntegrityError, transaction

    first.pk = None
    first.public_id = "reg_second_copy"
    first.registration_access_token_hash = None
    with pytest.raises(IntegrityError), transaction.atomic():
        first.save()


@pytest.mark.parametrize("roles", [["owner"], ["approver"], ["owner", "approver"]])
def test_only_security_and_admins_may_adopt(roles, owner, shadow):
    someone = UserFactory(username="someone", roles=roles)
    before = counts()
    response = post(api_for(someone), adopt_body(shadow, owner="someone"))
    assert response.status_code == 403
    assert response.json()["error_description"] == "only security and admins may adopt a shadow client"
    assert counts() == before


def test_the_shadow_adopted_by_an_approver_after_it_became_managed_is_a_conflict(
    security_user, owner, approver, approver2, shadow
):
    """Two adoptions cannot both wait; but a shadow that became managed meanwhile (say, by a renewal of the data)
    makes the approval a conflict and leaves the request pending."""
    post(api_for(security_user), adopt_body(shadow))
    req = RegistrationRequest.objects.get()
    Client.objects.filter(pk=shadow.pk).update(managed=True)
    with pytest.raises(DecisionConflict, match="already managed"):
        request_approve(reg_request=req, approver=approver, reason="ok")
    assert RegistrationRequest.objects.get().state == RequestState.PENDING
    assert not AuditEvent.objects.filter(action__in=["client.adopt", "request.approved"]).exists()


def test_an_adoption_needs_a_purpose_and_an_active_owner(security_user, owner, shadow):
    before = counts()
    with pytest.raises(PreregistrationInvalid, match="purpose is required"):
        preregister(submitter=security_user, owner=owner, adopt=shadow)
    gone = UserFactory(username="gone", roles=["owner"], is_active=False)
    with pytest.raises(PreregistrationInvalid, match="active person"):
        preregister(submitter=security_user, owner=gone, adopt=shadow, governance={"purpose": "x"})
    with pytest.raises(PreregistrationInvalid, match="not a cimd_url"):
        preregister(submitter=security_user, owner=owner, adopt=shadow, cimd_url="https://a.example/c.json")
    assert counts() == before


# --- the pages -----------------------------------------------------------------------------------------


def test_security_adopts_from_the_shadow_clients_page(client, security_user, owner, shadow):
    client.force_login(security_user)
    explain = client.get(f"/inventory/{shadow.registration_id}/").content.decode()
    adopt_link = f"/inventory/new/?adopt={shadow.registration_id}"
    assert adopt_link in explain and "Adopt…" in explain
    page = client.get(adopt_link)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Adopt Legacy reporting bot" in html and "legacy-reporting-bot" in html
    assert 'name="owner"' in html and 'name="cimd_url"' not in html
    assert "Legacy reporting bot" in html and "s3cr3t" not in html  # prefilled, without the IdP's secret
    form = {
        "source": "metadata",
        "metadata": json.dumps({"client_name": "Legacy reporting bot", "jwks": PUBLIC_JWKS, "scope": "tickets:read"}),
        "owner": owner.pk,
        "purpose": "Nightly ticket report",
        "scope": "tickets:read",
        "requested_ttl": 3600,
    }
    response = client.post(adopt_link, form, follow=True)
    assert response.status_code == 200
    req = RegistrationRequest.objects.get()
    assert req.kind == RequestKind.ADOPTION and req.client_id == shadow.pk and req.owner_id == owner.pk
    assert f"{req.public_id} waits for review" in response.content.decode()
    # the page now says an adoption waits, and a second submission is refused
    assert "already waits for review" in client.get(adopt_link).content.decode()
    again = client.post(adopt_link, form)
    assert again.status_code == 400 and "already waits for review" in again.content.decode()
    assert RegistrationRequest.objects.count() == 1


def test_the_adopt_link_is_for_security_and_admins_on_shadow_clients_only(client, owner, approver, shadow):
    managed = ClientFactory(owner=owner)
    admin = UserFactory(username="adm", roles=["admin"])
    client.force_login(admin)
    assert "Adopt…" in client.get(f"/inventory/{shadow.registration_id}/").content.decode()
    assert "Adopt…" not in client.get(f"/inventory/{managed.registration_id}/").content.decode()
    client.force_login(owner)
    assert client.get(f"{PAGE}?adopt={shadow.registration_id}").status_code == 403
    client.force_login(approver)
    assert client.get(f"{PAGE}?adopt={shadow.registration_id}").status_code == 403


def test_the_approver_sees_what_is_adopted(client, security_user, owner, approver, shadow):
    post(api_for(security_user), adopt_body(shadow))
    req = RegistrationRequest.objects.get()
    client.force_login(approver)
    html = client.get(f"/approvals/{req.public_id}/").content.decode()
    assert "a shadow client found at the IdP" in html and "legacy-reporting-bot" in html


def test_a_shadow_on_an_idp_that_is_not_the_default_is_adopted_there(security_user, owner, approver, shadow, idp):
    from inventory.models import IdPConnection
    from tests.factories import IdPFactory

    IdPConnection.objects.update(is_default=False)
    other = IdPFactory(name="the-new-default", is_default=True)
    assert post(api_for(security_user), adopt_body(shadow)).status_code == 201
    req = RegistrationRequest.objects.get()
    assert req.idp_id == idp.pk != other.pk
    request_approve(reg_request=req, approver=approver, reason="ok")
    assert Client.objects.get(pk=shadow.pk).idp_id == idp.pk
    assert OutboxEntry.objects.get(client_id=shadow.pk).idp_id == idp.pk
