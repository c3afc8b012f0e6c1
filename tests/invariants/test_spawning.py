"""Invariant 4 — spawning is bounded and audited against the parent.

With ``max_children_per_parent`` at 3, no parent ever has more than 3 children (accepted or waiting), whichever
door is tried and by whom, and every child's spawn is an audit event on its parent naming the child.
"""

from __future__ import annotations

import pytest

from approvals.models import RegistrationRequest
from approvals.oauth2 import credentials, errors, register
from approvals.policy_store import policy_publish
from inventory.containment import client_spawn_restore, client_spawn_revoke
from inventory.models import Client
from portal.audit import Actor
from portal.models import AuditEvent
from tests.invariants.support import (
    Path,
    approved_client,
    body,
    cell_id,
    matrix,
    refused_ok,
    register_http,
    rfc7592,
)

pytestmark = pytest.mark.django_db
LIMIT = 3


@pytest.fixture
def parents(world):
    policy_publish(actor=Actor.user(world.user("admin")), thresholds={"max_children_per_parent": LIMIT})
    low, low_rat = approved_client(
        world, scope="tickets:read docs:read", requested_ttl=3600, internal_only=True, name="low-parent"
    )
    medium, medium_rat = approved_client(world, scope="tickets:write", requested_ttl=3600, name="medium-parent")
    world.clients.update(low=low, medium=medium)
    world.bearers.update(low=low_rat, medium=medium_rat)
    return world


def assert_bounded_and_audited() -> None:
    for parent in Client.objects.all():
        children = set(Client.objects.filter(parent=parent).values_list("registration_id", flat=True))
        waiting = set(
            RegistrationRequest.objects.filter(parent_client=parent, state="pending", client=None).values_list(
                "public_id", flat=True
            )
        )
        assert len(children | waiting) <= LIMIT, (parent.name, len(children | waiting))
        assert parent.children_spawned <= LIMIT
        audited = {
            e.after["child"] for e in AuditEvent.objects.filter(action="client.spawn", object_id=parent.registration_id)
        }
        assert children | waiting <= audited, "a spawn without an audit event on its parent"


def spawn(bearer: str, n: int, **overrides) -> list:
    fields = {"scope": "tickets:read", **overrides}
    return [register_http(bearer, body(client_name=f"child-{i}", **fields)) for i in range(n)]


# --- the doors ---------------------------------------------------------------------------------------------


def agent_spawns_past_the_limit(world, role):
    responses = spawn(world.bearers["low"], LIMIT + 2)
    assert [r.status_code for r in responses] == [201] * LIMIT + [400, 400]
    refused = responses[-1].json()
    assert refused["error"] == "invalid_client_metadata"
    assert f"the limit is {LIMIT}" in refused["error_description"]
    assert f"already spawned {LIMIT} children" in refused["error_description"]


def agent_rotates_its_token_and_spawns_on(world, role):
    spawn(world.bearers["low"], 2)
    read = rfc7592("GET", world.clients["low"].registration_id, world.bearers["low"])
    spawn(read.json()["registration_access_token"], LIMIT + 1)


def agent_spawns_pending_children(world, role):
    spawn(world.bearers["medium"], LIMIT + 1, scope="tickets:write")


def grandchildren(world, role):
    first = spawn(world.bearers["low"], 1)[0].json()
    spawn(first["registration_access_token"], LIMIT + 1)


def approvers_approve_the_waiting_children(world, role):
    spawn(world.bearers["medium"], LIMIT + 1, scope="tickets:write")
    for request in RegistrationRequest.objects.filter(parent_client=world.clients["medium"], state="pending"):
        world.http(role).post(f"/approvals/{request.public_id}/decide/", {"decision": "approve", "reason": "ok"})
    spawn(world.bearers["medium"], 1, scope="tickets:write")


def a_stale_parent_row(world, role):
    """The policy judges a parent row read a moment ago; the UPDATE that accepts the spawn judges the row now."""
    spawn(world.bearers["low"], LIMIT - 1)
    requester = credentials.requester_authenticate(bearer=world.bearers["low"], body={})
    spawn(world.bearers["low"], 1)  # another agent takes the last slot in between
    with pytest.raises(errors.BadRequest, match=f"the limit is {LIMIT}"):
        register.registration_submit(requester=requester, body=body(scope="tickets:read", client_name="late"))


def revoke_then_spawn(world, role):
    with refused_ok():
        client_spawn_revoke(client=world.fresh("low"), actor=Actor.user(world.user("security")), reason="stop")
    spawn(world.bearers["low"], LIMIT + 1)


def restore_page_then_spawn(world, role):
    client_spawn_revoke(client=world.fresh("low"), actor=Actor.user(world.user("security")), reason="stop")
    world.http(role).post(f"/inventory/{world.clients['low'].registration_id}/restore-spawn/", {"reason": "ok"})
    with refused_ok():
        client_spawn_restore(
            client=world.fresh("low"), user=world.user(role) if role != "anonymous" else None, reason="ok"
        )
    spawn(world.bearers["low"], LIMIT + 1)


def api_and_admin_create_children(world, role):
    http = world.http(role)
    http.post(
        "/api/v1/clients/",
        {"name": "x", "parent": world.clients["low"].registration_id},
        content_type="application/json",
    )
    http.post("/admin/inventory/client/add/", {"name": "x", "parent": world.clients["low"].pk})


PATHS = [
    Path("RFC 7591 spawns past the limit", agent_spawns_past_the_limit, ("agent",)),
    Path("RFC 7592 rotation, then more spawns", agent_rotates_its_token_and_spawns_on, ("agent",)),
    Path("pending spawns", agent_spawns_pending_children, ("agent",)),
    Path("grandchildren", grandchildren, ("agent",)),
    Path("approver page approves the waiting children", approvers_approve_the_waiting_children),
    Path("a parent row read before another spawn", a_stale_parent_row, ("agent",)),
    Path("spawn right revoked", revoke_then_spawn, ("agent",)),
    Path("spawn right restored", restore_page_then_spawn),
    Path("management API and Django admin", api_and_admin_create_children),
]


@pytest.mark.parametrize(("path", "role"), matrix(PATHS), ids=cell_id)
def test_no_parent_exceeds_its_child_limit(parents, path, role):
    path.attempt(parents, role)
    assert_bounded_and_audited()


def test_the_limit_is_a_policy_threshold(world):
    policy_publish(actor=Actor.user(world.user("admin")), thresholds={"max_children_per_parent": 0})
    parent, rat = approved_client(world, scope="tickets:read", requested_ttl=3600, internal_only=True)
    refused = register_http(rat, body(scope="tickets:read"))
    assert refused.status_code == 400 and "the limit is 0" in refused.json()["error_description"]
    assert Client.objects.get(pk=parent.pk).children_spawned == 0
