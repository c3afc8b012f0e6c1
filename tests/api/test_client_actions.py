"""/api/v1/clients/<id>/<action>/, break glass, transfers and sponsorships: each role allowed or refused as on the
pages, malformed input a 400 that changes nothing, and the service's audit event written."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.choices import ClientState
from inventory.models import Client, ClientSponsor, TransferOffer
from portal.models import AuditEvent
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db

EC_JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "kid": "k1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    ]
}


def as_user(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def mine(idp, owner, team):
    return ClientFactory(idp=idp, owner=owner, team=team, name="mine")


def events(action: str, client: Client) -> int:
    return AuditEvent.objects.filter(action=action, object_id=client.registration_id).count()


def url(client: Client, action: str) -> str:
    return f"/api/v1/clients/{client.registration_id}/{action}/"


# --- owner actions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "state", "event"),
    [("suspend", ClientState.SUSPENDED, "client.suspend"), ("retire", ClientState.RETIRED, "client.retire")],
)
def test_owner_suspends_or_retires_their_client(mine, owner, action, state, event):
    response = as_user(owner).post(url(mine, action), {"reason": "no longer needed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == state and response.json()["registration_id"] == mine.registration_id
    mine.refresh_from_db()
    assert mine.state == state
    assert events(event, mine) == 1


def test_suspend_then_resume_and_a_second_resume_is_409(mine, owner):
    api = as_user(owner)
    assert api.post(url(mine, "suspend"), format="json").status_code == 200
    assert api.post(url(mine, "resume"), format="json").json()["state"] == ClientState.ACTIVE
    again = api.post(url(mine, "resume"), format="json")
    assert again.status_code == 409 and "detail" in again.json()
    assert events("client.resume", mine) == 1


def test_renew_inside_the_ceiling(mine, owner):
    before = mine.expires_at
    response = as_user(owner).post(url(mine, "renew"), {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["renewed"] is True and body["needs_review"] is False and body["request_id"] is None
    mine.refresh_from_db()
    assert mine.expires_at > before and events("client.renew", mine) == 1


def test_admin_may_act_on_any_client(mine, admin_user):
    assert as_user(admin_user).post(url(mine, "suspend"), format="json").status_code == 200


def test_other_people_are_refused_and_nothing_changes(mine, approver, security_user):
    stranger = UserFactory(username="stranger", roles=["owner"])
    assert as_user(stranger).post(url(mine, "retire"), format="json").status_code == 404  # not even visible
    refused = as_user(approver).post(url(mine, "retire"), format="json")  # approvers see clients, own none
    assert refused.status_code == 403 and "own clients" in refused.json()["detail"]
    assert as_user(security_user).post(url(mine, "retire"), format="json").status_code == 403
    assert APIClient().post(url(mine, "retire"), format="json").status_code in (401, 403)
    mine.refresh_from_db()
    assert mine.state == ClientState.ACTIVE and events("client.retire", mine) == 0


def test_a_reason_too_long_is_400_and_changes_nothing(mine, owner):
    response = as_user(owner).post(url(mine, "retire"), {"reason": "x" * 501}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    mine.refresh_from_db()
    assert mine.state == ClientState.ACTIVE and events("client.retire", mine) == 0


# --- rotate key ------------------------------------------------------------------------------------------


def test_rotate_key_replaces_the_jwks(mine, owner):
    response = as_user(owner).post(url(mine, "rotate-key"), {"jwks": EC_JWKS, "reason": "yearly"}, format="json")
    assert response.status_code == 200, response.content
    mine.refresh_from_db()
    assert mine.jwks["keys"][0]["kid"] == "k1" and events("client.rotate_key", mine) == 1


def test_a_private_key_is_refused_with_the_reason_and_nothing_changes(mine, owner):
    private = {"keys": [{**EC_JWKS["keys"][0], "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}
    response = as_user(owner).post(url(mine, "rotate-key"), {"jwks": private}, format="json")
    assert response.status_code == 400
    assert any("private" in problem for problem in response.json()["jwks"])
    mine.refresh_from_db()
    assert mine.jwks != private and events("client.rotate_key", mine) == 0


DEEP = "[" * 10_000 + "]" * 10_000


def test_deeply_nested_json_to_rotate_key_is_400_not_500(mine, owner):
    api = as_user(owner)
    body = api.post(url(mine, "rotate-key"), data=f'{{"jwks": {DEEP}}}', content_type="application/json")
    assert body.status_code == 400 and "nested too deeply" in body.json()["detail"]
    as_text = api.post(url(mine, "rotate-key"), {"jwks": DEEP}, format="json")  # the key set as JSON text
    assert as_text.status_code == 400 and "jwks" in as_text.json()
    assert events("client.rotate_key", mine) == 0


def test_deeply_nested_jwks_on_the_rotate_key_page_is_a_form_error(client, mine, owner):
    client.force_login(owner)
    page = client.post(f"/inventory/mine/{mine.registration_id}/rotate-key/", {"jwks": DEEP, "reason": ""})
    assert page.status_code == 200 and b"nested too deeply" in page.content
    assert events("client.rotate_key", mine) == 0


@pytest.mark.parametrize("endpoint", ["/api/v1/break-glass/preview/", "/api/v1/tokens/", "/api/v1/break-glass/"])
def test_deeply_nested_json_anywhere_in_the_api_is_400(endpoint):
    everyone = UserFactory(username="every-role", roles=["owner", "approver", "security", "admin"])
    response = as_user(everyone).post(endpoint, data=DEEP, content_type="application/json")
    assert response.status_code == 400 and response.json()["detail"].startswith("JSON parse error")


def test_nan_is_not_json(mine, owner):
    response = as_user(owner).post(url(mine, "retire"), data='{"reason": NaN}', content_type="application/json")
    assert response.status_code == 400 and events("client.retire", mine) == 0


# --- transfer, take over, sponsors -----------------------------------------------------------------------


def test_transfer_offer_and_accept(mine, owner):
    newcomer = UserFactory(username="newcomer", roles=["owner"])
    offered = as_user(owner).post(url(mine, "transfer"), {"username": "newcomer", "reason": "team move"}, format="json")
    assert offered.status_code == 201, offered.content
    offer_id = offered.json()["id"]
    assert offered.json()["to_user"] == "newcomer" and events("client.transfer_offer", mine) == 1
    listed = as_user(newcomer).get("/api/v1/transfers/").json()["results"]
    assert [o["id"] for o in listed] == [offer_id]
    stranger = UserFactory(username="stranger", roles=["owner"])
    assert as_user(stranger).post(f"/api/v1/transfers/{offer_id}/accept/", format="json").status_code == 403
    accepted = as_user(newcomer).post(f"/api/v1/transfers/{offer_id}/accept/", format="json")
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    mine.refresh_from_db()
    assert mine.owner == newcomer and events("client.transfer_accept", mine) == 1


def test_transfer_to_nobody_is_400_and_offers_nothing(mine, owner):
    response = as_user(owner).post(url(mine, "transfer"), {"username": "nobody-by-that-name"}, format="json")
    assert response.status_code == 400 and response.json()["username"] == ["No person with that username."]
    assert not TransferOffer.objects.exists()


def test_take_over_is_for_the_team_not_strangers(idp, team, owner):
    leaver = UserFactory(username="leaver", is_active=False)
    team.members.add(owner)
    orphan = ClientFactory(idp=idp, owner=leaver, team=team, orphaned_at=timezone.now())
    stranger = UserFactory(username="stranger", roles=["owner"])
    assert as_user(stranger).post(url(orphan, "take-over"), format="json").status_code == 403
    taken = as_user(owner).post(url(orphan, "take-over"), {"reason": "I run it now"}, format="json")
    assert taken.status_code == 200 and taken.json()["owner"] == owner.username
    assert events("client.take_over", orphan) == 1


def test_sponsor_invite_accept_remove(mine, owner):
    helper = UserFactory(username="helper", roles=["owner"])
    invited = as_user(owner).post(url(mine, "sponsors"), {"username": "helper"}, format="json")
    assert invited.status_code == 201 and invited.json()["state"] == "pending"
    pk = invited.json()["id"]
    assert as_user(owner).post(f"/api/v1/sponsorships/{pk}/accept/").status_code == 403  # not theirs to answer
    assert as_user(helper).post(f"/api/v1/sponsorships/{pk}/accept/").json()["state"] == "active"
    assert as_user(helper).post(f"/api/v1/sponsorships/{pk}/remove/").status_code == 200
    assert ClientSponsor.objects.get(pk=pk).state != "active"
    assert as_user(owner).post(url(mine, "sponsors"), {"username": ""}, format="json").status_code == 400


# --- containment and break glass -------------------------------------------------------------------------


def test_security_holds_and_lifts(mine, security_user, owner):
    api = as_user(security_user)
    held = api.post(url(mine, "hold"), {"reason": "leaked secret"}, format="json")
    assert held.status_code == 200, held.content
    assert held.json()["state"] == ClientState.SUSPENDED and held.json()["hold"]["reason"]
    assert events("client.hold", mine) == 1
    assert as_user(owner).post(url(mine, "resume"), format="json").status_code == 409  # a hold is not theirs
    again = api.post(url(mine, "hold"), {"reason": "twice"}, format="json")
    assert again.status_code == 409
    lifted = api.post(url(mine, "lift-hold"), {"reason": "rotated"}, format="json")
    assert lifted.status_code == 200 and lifted.json()["lifted"] == [mine.registration_id]
    assert lifted.json()["client"]["state"] == ClientState.ACTIVE


def test_a_hold_needs_a_reason_and_the_role(mine, security_user, owner, admin_user):
    assert as_user(security_user).post(url(mine, "hold"), {"reason": "  "}, format="json").status_code == 400
    assert as_user(owner).post(url(mine, "hold"), {"reason": "mine"}, format="json").status_code == 403
    mine.refresh_from_db()
    assert not mine.hold_kind and events("client.hold", mine) == 0
    assert as_user(admin_user).post(url(mine, "revoke-spawn"), {"reason": "x"}, format="json").status_code == 200
    mine.refresh_from_db()
    assert mine.spawn_revoked_at is not None and events("client.spawn_revoke", mine) == 1
    restored = as_user(security_user).post(url(mine, "restore-spawn"), {"reason": "ok"}, format="json")
    assert restored.status_code == 200 and restored.json()["can_spawn"] is True


def test_break_glass_preview_then_execute(mine, owner, security_user):
    api = as_user(security_user)
    scope = {"scope": "owner", "value": owner.username, "action": "suspend"}
    preview = api.post("/api/v1/break-glass/preview/", scope, format="json")
    assert preview.status_code == 200 and preview.json()["matched"] == 1
    mine.refresh_from_db()
    assert mine.state == ClientState.ACTIVE  # a preview changes nothing
    assert api.post("/api/v1/break-glass/", scope, format="json").status_code == 400  # no reason
    done = api.post("/api/v1/break-glass/", {**scope, "reason": "incident 42"}, format="json")
    assert done.status_code == 200 and done.json()["count"] == 1 and done.json()["decision_id"].startswith("bg_")
    mine.refresh_from_db()
    assert mine.state == ClientState.SUSPENDED and mine.hold_kind
    assert AuditEvent.objects.filter(action="breakglass.suspend").count() == 1


def test_break_glass_is_not_for_owners_and_bad_scopes_are_400(owner, security_user):
    refused = as_user(owner).post(
        "/api/v1/break-glass/", {"scope": "owner", "value": "x", "action": "retire", "reason": "r"}, format="json"
    )
    assert refused.status_code == 403
    bad = as_user(security_user).post(
        "/api/v1/break-glass/preview/", {"scope": "planet", "value": "x", "action": "retire"}, format="json"
    )
    assert bad.status_code == 400 and "scope" in bad.json()
