"""/api/v1/tokens/ and /api/v1/my-requests/ (owners), /api/v1/sync-failures/ (admins): roles, bad input, audit."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals.models import InitialAccessToken
from inventory.choices import OutboxOperation, OutboxStatus
from inventory.models import OutboxEntry
from portal.audit import events_for
from portal.crypto import hash_token
from portal.models import AuditEvent
from tests.factories import ClientFactory, RequestFactory, TokenFactory, UserFactory

pytestmark = pytest.mark.django_db


def as_user(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


MINT = {"purpose": "nightly ticket triage", "scopes": ["tickets:read"], "max_ttl_hours": 2, "valid_days": 1}


def test_owner_mints_a_token_shown_once(owner, catalogue, idp):
    response = as_user(owner).post("/api/v1/tokens/", MINT, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    token = InitialAccessToken.objects.get(pk=body["id"])
    assert token.token_hash == hash_token(body["token"]) and body["state"] == "active"
    assert body["allowed_scopes"] == ["tickets:read"] and body["max_ttl_seconds"] == 7200
    assert AuditEvent.objects.filter(action="token.mint", object_id=str(token.pk)).count() == 1
    listed = as_user(owner).get("/api/v1/tokens/").json()["results"]
    assert [t["id"] for t in listed] == [token.pk] and "token" not in listed[0]  # never shown again


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scopes": ["no:such:scope"]}, "non_field_errors"),
        ({"scopes": []}, "scopes"),
        ({"max_uses": 0}, "max_uses"),
        ({"allowed_networks": ["10.0.0.0/8", "10.1.2.3/8"]}, "allowed_networks"),
        ({"allowed_networks": "10.0.0.0/8"}, "allowed_networks"),
    ],
)
def test_bad_mint_input_is_400_and_mints_nothing(owner, catalogue, idp, change, field):
    response = as_user(owner).post("/api/v1/tokens/", {**MINT, **change}, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not InitialAccessToken.objects.exists() and not AuditEvent.objects.filter(action="token.mint").exists()


def test_tokens_are_for_owners(security_user, approver, catalogue):
    for person in (security_user, approver):
        assert as_user(person).post("/api/v1/tokens/", MINT, format="json").status_code == 403
        assert as_user(person).get("/api/v1/tokens/").status_code == 403
    assert not InitialAccessToken.objects.exists()


def test_admins_see_and_revoke_any_token_but_mint_none(admin_user, owner, catalogue):
    token = TokenFactory(owner=owner)
    api = as_user(admin_user)
    assert [t["owner"] for t in api.get("/api/v1/tokens/").json()["results"]] == [owner.username]
    assert api.post("/api/v1/tokens/", MINT, format="json").status_code == 403
    assert api.post(f"/api/v1/tokens/{token.pk}/revoke/", {"reason": "leaver"}, format="json").status_code == 200
    assert AuditEvent.objects.filter(action="token.revoke", actor_id=str(admin_user.pk)).count() == 1


def test_revoke_own_token_once_and_never_anothers(owner, catalogue):
    token = TokenFactory(owner=owner)
    others = TokenFactory(owner=UserFactory(username="other", roles=["owner"]))
    api = as_user(owner)
    assert api.post(f"/api/v1/tokens/{others.pk}/revoke/", format="json").status_code == 404
    revoked = api.post(f"/api/v1/tokens/{token.pk}/revoke/", {"reason": "leaked"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert api.post(f"/api/v1/tokens/{token.pk}/revoke/", format="json").status_code == 409
    others.refresh_from_db()
    assert others.revoked_at is None
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_owner_withdraws_their_pending_request(owner, idp, team):
    mine = RequestFactory(owner=owner, team=team, idp=idp)
    theirs = RequestFactory(owner=UserFactory(username="other", roles=["owner"]), idp=idp)
    api = as_user(owner)
    assert [r["id"] for r in api.get("/api/v1/my-requests/").json()["results"]] == [mine.public_id]
    assert api.post(f"/api/v1/my-requests/{theirs.public_id}/withdraw/", format="json").status_code == 404
    done = api.post(f"/api/v1/my-requests/{mine.public_id}/withdraw/", {"reason": "not needed"}, format="json")
    assert done.status_code == 200 and done.json()["state"] == "withdrawn"
    again = api.post(f"/api/v1/my-requests/{mine.public_id}/withdraw/", format="json")
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="request.withdraw").count() == 1


def _dead(idp) -> OutboxEntry:
    client = ClientFactory(idp=idp, sync_failed=True)
    return OutboxEntry.objects.create(
        client=client,
        idp=idp,
        operation=OutboxOperation.DELETE,
        status=OutboxStatus.DEAD,
        attempts=8,
        next_attempt_at=client.created_at,
        last_error="AccessDenied: the IdP refused the token",
    )


def test_sync_failures_are_admins_and_retry_resolve_audit(admin_user, security_user, owner, idp):
    entry, other = _dead(idp), _dead(idp)
    for person in (security_user, owner):
        assert as_user(person).get("/api/v1/sync-failures/").status_code == 403
        assert as_user(person).post(f"/api/v1/sync-failures/{entry.pk}/retry/").status_code == 403
    api = as_user(admin_user)
    rows = api.get("/api/v1/sync-failures/").json()["results"]
    assert {r["id"] for r in rows} == {entry.pk, other.pk}
    assert rows[0]["resolvable"] is True and rows[0]["hint"].startswith("The IdP refused")
    retried = api.post(f"/api/v1/sync-failures/{entry.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == OutboxStatus.PENDING
    assert api.post(f"/api/v1/sync-failures/{entry.pk}/retry/").status_code == 409  # no longer dead
    assert events_for("client", entry.client.registration_id).filter(action="outbox.retry").count() == 1
    assert api.post(f"/api/v1/sync-failures/{other.pk}/resolve/", {"reason": ""}, format="json").status_code == 400
    other.refresh_from_db()
    assert other.status == OutboxStatus.DEAD
    resolved = api.post(f"/api/v1/sync-failures/{other.pk}/resolve/", {"reason": "gone at the IdP"}, format="json")
    assert resolved.status_code == 200 and resolved.json()["status"] != OutboxStatus.DEAD


def test_owner_mints_a_token_with_allowed_networks(owner, catalogue, idp):
    response = as_user(owner).post(
        "/api/v1/tokens/", {**MINT, "allowed_networks": [" 10.0.0.0/8", "2001:db8::/32"]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["allowed_networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert InitialAccessToken.objects.get().allowed_networks == ["10.0.0.0/8", "2001:db8::/32"]
    bad = as_user(owner).post("/api/v1/tokens/", {**MINT, "allowed_networks": ["office"]}, format="json")
    assert bad.status_code == 400 and "#1 'office' is not a CIDR block" in bad.json()["allowed_networks"][0]
    assert InitialAccessToken.objects.count() == 1
