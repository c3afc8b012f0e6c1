"""RFC 7592 management (GET/PUT/DELETE /oauth2/register/<id>) and spawned agents."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from approvals.policy_store import policy_publish
from inventory.choices import ClientState, OutboxOperation
from inventory.lifecycle import client_transition
from inventory.models import Client, OutboxEntry
from portal.audit import Actor
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    EC_KEY,
    _fresh_limits_and_policy,
    call,
    counts,
    low_body,
    make_token,
    path_of,
    post,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def plaintext(catalogue, idp, owner):
    return make_token(owner)[1]


@pytest.fixture
def registered(client, plaintext):
    """An active low-risk client: (uri path, registration access token, response body)."""
    response = post(client, low_body(scope="tickets:read docs:read", requested_ttl=7200), plaintext)
    assert response.status_code == 201, response.content
    body = response.json()
    return path_of(body["registration_client_uri"]), body["registration_access_token"], body


def _error(response, status, error, fragment=""):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error and fragment in body["error_description"]
    if status == 401:
        assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    return body


# --- GET ---------------------------------------------------------------------------------------------


def test_read_returns_the_client_and_rotates_the_token(client, registered):
    uri, rat, created = registered
    response = call(client, "GET", uri, rat)
    assert response.status_code == 200
    body = response.json()
    assert body["client_id"] == created["client_id"]
    assert body["scope"] == "docs:read tickets:read" and body["status"] == "active"
    assert body["registration_access_token"] != rat
    # the new one works; once it has been used, the old one is a reuse (approvals.oauth2.rat, tests/approvals/test_rat_grace.py)
    assert call(client, "GET", uri, body["registration_access_token"]).status_code == 200
    _error(call(client, "GET", uri, rat), 401, "invalid_token", "already used")


def test_read_with_another_registrations_token_is_401(client, registered, plaintext):
    uri, _, _ = registered
    other = post(client, low_body(), plaintext).json()
    _error(call(client, "GET", uri, other["registration_access_token"]), 401, "invalid_token")
    _error(call(client, "GET", uri, None), 401, "invalid_token", "required")


def test_read_while_pending_is_202_then_400_once_denied(client, plaintext):
    pending = post(client, low_body(scope="tickets:write"), plaintext).json()
    uri = path_of(pending["registration_client_uri"])
    response = call(client, "GET", uri, pending["registration_access_token"])
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["registration_access_token"] != pending["registration_access_token"]

    RegistrationRequest.objects.filter(public_id=pending["registration_id"]).update(
        state=RequestState.DENIED, decision_reason="tickets:write is not needed for summaries"
    )
    denied = _error(call(client, "GET", uri, body["registration_access_token"]), 400, "access_denied")
    assert "tickets:write is not needed for summaries" in denied["error_description"]


def test_read_after_lapse_is_400(client, plaintext):
    pending = post(client, low_body(scope="tickets:write"), plaintext).json()
    RegistrationRequest.objects.filter(public_id=pending["registration_id"]).update(state=RequestState.LAPSED)
    uri = path_of(pending["registration_client_uri"])
    _error(call(client, "GET", uri, pending["registration_access_token"]), 400, "access_denied", "lapsed")


def test_read_of_an_ended_client_is_401_and_kills_the_token(client, registered):
    uri, rat, _ = registered
    Client.objects.update(state=ClientState.REVOKED)
    _error(call(client, "GET", uri, rat), 401, "invalid_token", "revoked")
    assert RegistrationRequest.objects.get().registration_access_token_hash is None


# --- PUT ---------------------------------------------------------------------------------------------


def test_put_narrows_scopes_and_lifetime_and_queues_an_update(client, registered):
    uri, rat, created = registered
    before_expiry = Client.objects.get().expires_at
    body = low_body(scope="tickets:read", requested_ttl=600, client_id=created["client_id"])

    response = call(client, "PUT", uri, rat, body)

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["scope"] == "tickets:read"
    assert answer["registration_access_token"] != rat
    updated = Client.objects.get()
    assert updated.scopes == ["tickets:read"]
    assert updated.expires_at < before_expiry
    assert updated.expires_at <= updated.created_at + timedelta(seconds=600)
    assert OutboxEntry.objects.filter(operation=OutboxOperation.UPDATE).count() == 1
    event = AuditEvent.objects.get(action="client.narrow")
    assert event.before["scopes"] == ["docs:read", "tickets:read"] and event.after["scopes"] == ["tickets:read"]
    # rotated: once the new token has been used, a replay of the old one is refused (and revokes both)
    assert call(client, "GET", uri, answer["registration_access_token"]).status_code == 200
    _error(call(client, "PUT", uri, rat, body), 401, "invalid_token", "already used")
    assert OutboxEntry.objects.filter(operation=OutboxOperation.UPDATE).count() == 1


def test_put_rotates_keys(client, registered):
    from joserfc.jwk import ECKey

    uri, rat, _ = registered
    new_key = ECKey.generate_key("P-256", auto_kid=True)
    jwks = {"keys": [new_key.as_dict(private=False)]}
    response = call(client, "PUT", uri, rat, low_body(scope="tickets:read docs:read", requested_ttl=7200, jwks=jwks))
    assert response.status_code == 200, response.content
    assert Client.objects.get().jwks == jwks
    assert AuditEvent.objects.get(action="client.narrow").after["key_rotated"] is True


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"scope": "tickets:read docs:read tickets:write"}, "adds scopes tickets:write"),
        ({"requested_ttl": 86400}, "lengthens requested_ttl"),
        ({"internal_only": False}, "turns internal_only off"),
        (
            {
                "redirect_uris": ["https://agent.example.com/cb"],
                "grant_types": ["authorization_code", "client_credentials"],
            },
            "adds redirect URIs",
        ),
    ],
)
def test_put_that_widens_is_refused_and_changes_nothing(client, registered, overrides, fragment):
    uri, rat, _ = registered
    before, snapshot = counts(), Client.objects.values().get()
    body = low_body(scope="tickets:read docs:read", requested_ttl=7200)
    body.update(overrides)
    response = call(client, "PUT", uri, rat, body)
    answer = _error(response, 400, "invalid_client_metadata", "widening needs a new registration")
    assert fragment in answer["error_description"]
    assert counts() == before and Client.objects.values().get() == snapshot
    assert call(client, "GET", uri, rat).status_code == 200  # a refused PUT does not rotate


def test_put_with_invalid_metadata_or_wrong_client_id_is_400(client, registered):
    uri, rat, _ = registered
    _error(
        call(client, "PUT", uri, rat, low_body(scope="tickets:read", jwks={"keys": []})),
        400,
        "invalid_client_metadata",
        "at least one key",
    )
    _error(
        call(client, "PUT", uri, rat, low_body(scope="tickets:read", client_id="someone-else")),
        400,
        "invalid_client_metadata",
        "client_id",
    )
    _error(call(client, "PUT", uri, rat, [1]), 400, "invalid_client_metadata", "JSON object")


def test_put_while_pending_is_400(client, plaintext):
    pending = post(client, low_body(scope="tickets:write"), plaintext).json()
    uri = path_of(pending["registration_client_uri"])
    _error(
        call(client, "PUT", uri, pending["registration_access_token"], low_body()),
        400,
        "invalid_client_metadata",
        "waiting for review",
    )


# --- DELETE ------------------------------------------------------------------------------------------


def test_delete_retires_the_client_and_queues_its_removal(client, registered):
    uri, rat, _ = registered
    response = call(client, "DELETE", uri, rat)
    assert response.status_code == 204 and response.content == b""
    retired = Client.objects.get()
    assert retired.state == ClientState.RETIRED and retired.ended_at is not None
    assert OutboxEntry.objects.filter(client=retired, operation=OutboxOperation.DELETE).count() == 1
    assert AuditEvent.objects.get(action="client.retired").reason == "RFC 7592 delete by the agent"
    _error(call(client, "GET", uri, rat), 401, "invalid_token")
    _error(call(client, "DELETE", uri, rat), 401, "invalid_token")


def test_delete_while_pending_withdraws_the_request(client, plaintext):
    pending = post(client, low_body(scope="tickets:write"), plaintext).json()
    uri = path_of(pending["registration_client_uri"])
    assert call(client, "DELETE", uri, pending["registration_access_token"]).status_code == 204
    reg = RegistrationRequest.objects.get()
    assert reg.state == RequestState.WITHDRAWN and reg.registration_access_token_hash is None
    assert AuditEvent.objects.filter(action="request.withdraw", object_id=reg.public_id, actor_type="agent").exists()


def test_manage_rejects_other_methods(client, registered):
    uri, rat, _ = registered
    assert call(client, "POST", uri, rat, {}).status_code == 405


# --- spawned agents ----------------------------------------------------------------------------------


def test_spawn_creates_a_child_inside_its_parent(client, registered, owner):
    _, parent_rat, parent_body = registered
    parent = Client.objects.get()
    response = post(client, low_body(client_name="sub-agent", scope="docs:read", requested_ttl=86400), parent_rat)
    assert response.status_code == 201, response.content
    child = Client.objects.exclude(pk=parent.pk).get()
    assert child.parent == parent and child.depth == parent.depth + 1 == 1
    assert child.owner == owner and child.created_via == "spawn"
    assert set(child.scopes) <= set(parent.scopes)
    assert child.expires_at <= parent.expires_at
    reg = RegistrationRequest.objects.get(client=child)
    assert reg.parent_client == parent and reg.via == "spawn"
    assert "ttl_clamped_to_parent" in {r["code"] for r in reg.reasons}
    # spawning is not an RFC 7592 use: the parent's token still works
    assert call(client, "GET", path_of(parent_body["registration_client_uri"]), parent_rat).status_code == 200


def test_spawn_cannot_exceed_the_parents_scopes(client, registered):
    _, parent_rat, _ = registered
    before = counts()
    response = post(client, low_body(scope="tickets:read calendar:read"), parent_rat)
    _error(response, 400, "invalid_client_metadata", "'calendar:read' is not held by the parent client")
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    assert RegistrationRequest.objects.latest("pk").state == RequestState.REFUSED


def test_spawn_depth_is_limited(client, registered, admin_user):
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_spawn_depth": 1})
    _, parent_rat, _ = registered
    child = post(client, low_body(scope="tickets:read"), parent_rat).json()
    grandchild = post(client, low_body(scope="tickets:read"), child["registration_access_token"])
    _error(grandchild, 400, "invalid_client_metadata", "would be at depth 2; the limit is 1")


def test_child_of_a_reviewed_parent_is_never_auto_approved(client, registered):
    _, parent_rat, _ = registered
    Client.objects.update(risk_tier="medium")
    response = post(client, low_body(scope="tickets:read"), parent_rat)
    assert response.status_code == 202
    assert response.json()["risk_tier"] == "medium"


def test_only_an_active_parent_can_spawn(client, registered):
    _, parent_rat, _ = registered
    Client.objects.update(state=ClientState.SUSPENDED)
    _error(post(client, low_body(scope="tickets:read"), parent_rat), 401, "invalid_token", "suspended")


def test_parent_expired_in_time_but_not_swept_is_refused(client, registered):
    _, parent_rat, _ = registered
    Client.objects.update(expires_at=timezone.now() - timedelta(seconds=5))
    _error(post(client, low_body(scope="tickets:read"), parent_rat), 400, "invalid_client_metadata", "no lifetime left")


def test_retiring_the_parent_retires_its_children(client, registered):
    _, parent_rat, _ = registered
    parent = Client.objects.get()
    assert post(client, low_body(scope="tickets:read"), parent_rat).status_code == 201
    client_transition(client=parent, target=ClientState.RETIRED, actor=Actor.system("test"))
    assert set(Client.objects.values_list("state", flat=True)) == {ClientState.RETIRED}
    assert AuditEvent.objects.filter(action="client.retired.cascade").count() == 1


def test_signed_request_key_material_is_public_only(client, registered):
    uri, rat, _ = registered
    body = low_body(scope="tickets:read", jwks={"keys": [EC_KEY.as_dict(private=True)]})
    _error(call(client, "PUT", uri, rat, body), 400, "invalid_client_metadata", "private key material")


def test_management_is_rate_limited_per_address(client, registered, settings):
    uri, rat, _ = registered
    settings.REGISTRAR_REGISTER_RATE_PER_IP = "1/m"
    response = call(client, "GET", uri, rat)
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.json()["error"] == "too_many_requests"
    assert call(client, "GET", uri, rat).status_code == 429  # the token was not rotated by a refused call
