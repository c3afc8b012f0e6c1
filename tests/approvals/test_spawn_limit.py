"""Spawning is bounded and audited against the parent.

Regression (issue 13): one parent registration access token spawned any number of children, without rotating.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from approvals.models import RegistrationRequest
from approvals.oauth2 import credentials, errors, register
from approvals.policy_store import policy_publish
from inventory.containment import client_spawn_restore, client_spawn_revoke_by
from inventory.lifecycle import PermissionRefused
from inventory.models import Client
from portal.audit import Actor
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    counts,
    low_body,
    make_token,
    post,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def parent(client, catalogue, idp, owner):
    """(parent client, its registration access token)."""
    _, plaintext = make_token(owner, max_uses=100)
    response = post(client, low_body(scope="tickets:read docs:read"), plaintext)
    assert response.status_code == 201, response.content
    return Client.objects.get(registration_id=response.json()["registration_id"]), response.json()[
        "registration_access_token"
    ]


def test_one_parent_token_spawns_at_most_the_default_ten_children(client, parent):
    """Regression: the same registration access token spawned any number of children."""
    parent_client, rat = parent
    statuses = [post(client, low_body(client_name=f"child-{i}"), rat).status_code for i in range(10)]
    assert statuses == [201] * 10
    before = counts()
    refused = post(client, low_body(client_name="child-11"), rat)
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "invalid_client_metadata"
    assert body["error_description"] == (
        "the parent client has already spawned 10 children; the limit is 10 (policy max_children_per_parent)"
    )
    # a refused spawn consumes nothing: only its refused row and audit event are written
    assert counts() == before | {"requests": before["requests"] + 1, "audit": before["audit"] + 1}
    assert Client.objects.get(pk=parent_client.pk).children_spawned == 10
    assert Client.objects.filter(parent=parent_client).count() == 10


def test_each_spawn_is_audited_against_the_parent(client, parent):
    parent_client, rat = parent
    child = post(client, low_body(client_name="audited-child"), rat).json()
    event = AuditEvent.objects.get(action="client.spawn")
    assert (event.object_type, event.object_id) == ("client", parent_client.registration_id)
    assert event.after["child"] == child["registration_id"]
    assert (event.after["children_spawned"], event.after["max_children_per_parent"]) == (1, 10)
    assert event.actor_label == f"client {parent_client.registration_id}"


def test_pending_spawns_use_a_slot_and_refusals_do_not(client, parent, admin_user):
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_children_per_parent": 2})
    parent_client, rat = parent
    assert post(client, low_body(scope="calendar:read"), rat).status_code == 400  # not the parent's scope
    Client.objects.filter(pk=parent_client.pk).update(risk_tier="medium")  # its children now need review
    assert [post(client, low_body(), rat).status_code for _ in range(3)] == [202, 202, 400]
    assert Client.objects.get(pk=parent_client.pk).children_spawned == 2
    assert RegistrationRequest.objects.filter(parent_client=parent_client, state="pending").count() == 2


def test_the_limit_holds_when_the_policy_saw_a_stale_count(client, parent, admin_user):
    """Race-free: the conditional UPDATE in the accepting statement decides, not the row the policy read."""
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_children_per_parent": 1})
    parent_client, rat = parent
    requester = credentials.requester_authenticate(bearer=rat, body={})
    assert requester.parent.children_spawned == 0
    assert post(client, low_body(client_name="first"), rat).status_code == 201  # takes the only slot
    before = counts()
    with pytest.raises(errors.BadRequest, match="already spawned 1 children; the limit is 1"):
        register.registration_submit(requester=requester, body=low_body(client_name="second"))
    assert counts() == before
    assert Client.objects.filter(parent=parent_client).count() == 1


def test_a_revoked_spawn_right_refuses_spawns_with_the_reason(client, parent, owner, security_user):
    parent_client, rat = parent
    with pytest.raises(PermissionRefused):
        client_spawn_revoke_by(client=parent_client, user=owner, reason="mine")
    client_spawn_revoke_by(client=parent_client, user=security_user, reason="too many agents in prod")
    refused = post(client, low_body(), rat)
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert refused.json()["error_description"].endswith(": too many agents in prod")
    assert Client.objects.filter(parent=parent_client).count() == 0
    with pytest.raises(PermissionRefused):
        client_spawn_restore(client=parent_client, user=owner, reason="please")
    client_spawn_restore(client=parent_client, user=security_user, reason="reviewed")
    assert post(client, low_body(), rat).status_code == 201
    assert [
        e.action
        for e in AuditEvent.objects.filter(object_id=parent_client.registration_id, action__startswith="client.spawn")
    ] == ["client.spawn_revoke", "client.spawn_restore", "client.spawn"]


def test_rotating_the_token_does_not_reset_the_count(client, parent, admin_user):
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_children_per_parent": 1})
    parent_client, rat = parent
    assert post(client, low_body(), rat).status_code == 201
    read = client.get(f"/oauth2/register/{parent_client.registration_id}", HTTP_AUTHORIZATION=f"Bearer {rat}")
    assert read.status_code == 200
    assert post(client, low_body(), read.json()["registration_access_token"]).status_code == 400
    assert Client.objects.get(pk=parent_client.pk).expires_at > timezone.now()
