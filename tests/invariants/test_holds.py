"""Invariant 2 — a hold is lifted only by security or an admin, with a reason.

Security broke glass on a lineage: the parent and its child are suspended and held. Whatever door is tried by
whom, each held client is either still not active, or active again because security or an admin lifted the
hold with a reason (a ``client.hold_lift`` event by such a person). An owner's own suspension stays theirs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.choices import RequestKind, RequestState
from approvals.models import RegistrationRequest
from inventory import lifecycle as lc
from inventory.breakglass import breakglass_execute
from inventory.choices import ClientState
from inventory.containment import client_hold_lift
from inventory.lifecycle_policies import run_lifecycle_policies
from inventory.models import Client
from inventory.reconcile import reconcile_connection
from inventory.sweeps import sweep_expired, sweep_orphans, sweep_run
from portal.models import AuditEvent, User
from portal.roles import can_hold_clients
from tests.invariants.support import (
    PEOPLE,
    Path,
    TamperableConnector,
    approved_client,
    body,
    cell_id,
    deliver,
    matrix,
    refused_ok,
    register_http,
    rfc7592,
    scim,
)

pytestmark = pytest.mark.django_db
HELD = ("parent", "child")


@pytest.fixture
def held(world):
    parent, parent_rat = approved_client(
        world, scope="tickets:read docs:read", requested_ttl=3600, internal_only=True, name="held-parent"
    )
    response = register_http(parent_rat, body(scope="tickets:read", requested_ttl=1800, client_name="held-child"))
    assert response.status_code == 201, response.content
    child = Client.objects.get(registration_id=response.json()["registration_id"])
    world.clients.update(parent=parent, child=child)
    world.bearers.update(parent=parent_rat, child=response.json()["registration_access_token"])
    # A renewal waiting since before the incident: approving it later must not bring the client back.
    lc.client_renew(client=parent, user=world.user("owner"), ttl_seconds=7 * 86400)
    world.notes["renewal"] = RegistrationRequest.objects.get(kind=RequestKind.RENEWAL, state=RequestState.PENDING)
    breakglass_execute(
        user=world.user("security"),
        scope="lineage",
        value=parent.registration_id,
        action="suspend",
        reason="matrix incident INC-7",
    )
    for key in HELD:
        client = world.fresh(key)
        assert (client.state, client.hold_kind) == (ClientState.SUSPENDED, "break_glass"), key
    return world


def assert_held_or_properly_lifted(world) -> None:
    for key in HELD:
        client = world.fresh(key)
        if client.state != ClientState.ACTIVE:
            continue
        assert not client.hold_kind, key  # the database refuses this combination anyway
        lift = AuditEvent.objects.filter(action="client.hold_lift", object_id=client.registration_id).last()
        assert lift is not None, f"{key} is active again without a hold lift"
        assert lift.reason.strip(), "a hold is lifted with a reason"
        assert can_hold_clients(User.objects.get(pk=int(lift.actor_id))), f"{lift.actor_label} may not lift holds"


# --- the doors ---------------------------------------------------------------------------------------------


def owner_page_resume(world, role):
    http = world.http(role)
    for key in HELD:
        http.post(f"/inventory/mine/{world.clients[key].registration_id}/resume/", {"reason": "back to work"})


def resume_service(world, role):
    for key in HELD:
        with refused_ok():
            lc.client_resume(client=world.fresh(key), user=world.user(role), reason="back to work")


def lift_page_without_reason(world, role):
    http = world.http(role)
    for key in HELD:
        http.post(f"/inventory/{world.clients[key].registration_id}/lift-hold/", {"reason": "  "})


def lift_page_with_reason(world, role):
    world.http(role).post(
        f"/inventory/{world.clients['parent'].registration_id}/lift-hold/", {"reason": "investigated: false alarm"}
    )


def lift_service(world, role):
    with refused_ok():
        client_hold_lift(client=world.fresh("parent"), user=world.user(role), reason="investigated")


def agent_rfc7592(world, role):
    for key in HELD:
        registration_id, rat = world.clients[key].registration_id, world.bearers[key]
        read = rfc7592("GET", registration_id, rat)
        if read.status_code == 200:
            rat = read.json()["registration_access_token"]
        rfc7592("PUT", registration_id, rat, body(scope="tickets:read", requested_ttl=600))


def agent_spawns_under_a_held_parent(world, role):
    register_http(world.bearers["parent"], body(scope="tickets:read"))


def approver_page_approves_the_old_renewal(world, role):
    world.http(role).post(
        f"/approvals/{world.notes['renewal'].public_id}/decide/", {"decision": "approve", "reason": "renew it"}
    )


def api_approves_the_old_renewal(world, role):
    world.http(role).post(
        f"/api/v1/requests/{world.notes['renewal'].public_id}/approve/",
        {"reason": "renew it"},
        content_type="application/json",
    )


def api_writes_the_client(world, role):
    http = world.http(role)
    for key in HELD:
        url = f"/api/v1/clients/{world.clients[key].registration_id}/"
        for method in ("patch", "put", "post"):
            getattr(http, method)(url, {"state": "active", "hold_kind": ""}, content_type="application/json")
        http.post(url + "resume/", {"reason": "x"}, content_type="application/json")


def admin_edits_the_client(world, role):
    http = world.http(role)
    for key in HELD:
        client = world.fresh(key)
        http.post(
            f"/admin/inventory/client/{client.pk}/change/",
            {"purpose": client.purpose, "state": "active", "hold_kind": "", "hold_reason": ""},
        )


def transfer_then_new_owner_resumes(world, role):
    with refused_ok():
        offer = lc.client_transfer_offer(
            client=world.fresh("parent"), to_user=world.user("other_owner"), user=world.user(role), reason="yours now"
        )
        lc.client_transfer_accept(offer=offer, user=world.user("other_owner"))
    with refused_ok():
        lc.client_resume(client=world.fresh("parent"), user=world.user("other_owner"))


def scim_leaver_returns_takes_over_resumes(world, role):
    owner = world.user("owner")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    scim("PATCH", f"Users/{owner.pk}", patch)
    sweep_orphans()
    patch["Operations"][0]["value"] = True
    scim("PATCH", f"Users/{owner.pk}", patch)
    for key in HELD:
        with refused_ok():
            lc.client_take_over(client=world.fresh(key), user=world.user(role), reason="mine again")
        with refused_ok():
            lc.client_resume(client=world.fresh(key), user=world.user(role))


def owner_suspends_and_resumes_on_top(world, role):
    for key in HELD:
        with refused_ok():
            lc.client_suspend(client=world.fresh(key), user=world.user(role), reason="mine")
        with refused_ok():
            lc.client_resume(client=world.fresh(key), user=world.user(role), reason="mine")


def sweeps_run(world, role):
    for now in (timezone.now(), timezone.now() + timedelta(days=40)):
        sweep_expired(now=now)
        sweep_orphans(now=now)
        run_lifecycle_policies(now=now)
        sweep_run("lapsed", now=now)


def reconcile_when_the_idp_copy_is_enabled(world, role):
    world.idp.repair_drift = True
    world.idp.save(update_fields=["repair_drift"])
    for key in HELD:
        deliver(world.fresh(key))  # the break-glass DISABLE reaches the IdP
        TamperableConnector.tamper(world.fresh(key), enabled=True)
    reconcile_connection(idp=world.idp)
    for key in HELD:
        deliver(world.fresh(key))
        assert TamperableConnector.remote[world.fresh(key).idp_client_id].enabled is False


def delivery_runs(world, role):
    for key in HELD:
        deliver(world.fresh(key))


def break_glass_again(world, role):
    with refused_ok():
        breakglass_execute(user=world.user(role), scope="owner", value="inv-owner", action="suspend", reason="again")


def database_write(world, role):
    for key in HELD:
        with pytest.raises(IntegrityError), transaction.atomic():
            Client.objects.filter(pk=world.clients[key].pk).update(state=ClientState.ACTIVE)


PATHS = [
    Path("owner-page resume", owner_page_resume),
    Path("resume service", resume_service, PEOPLE[1:]),
    Path("lift-hold page without a reason", lift_page_without_reason),
    Path("lift-hold page with a reason", lift_page_with_reason),
    Path("lift-hold service", lift_service, PEOPLE[1:]),
    Path("RFC 7592 read and narrow", agent_rfc7592, ("agent",)),
    Path("RFC 7591 spawn under the held parent", agent_spawns_under_a_held_parent, ("agent",)),
    Path("approver page approves a renewal filed before the hold", approver_page_approves_the_old_renewal),
    Path("management API approves a renewal filed before the hold", api_approves_the_old_renewal),
    Path("management API writes the client", api_writes_the_client),
    Path("Django admin edits the client", admin_edits_the_client),
    Path("transfer, then the new owner resumes", transfer_then_new_owner_resumes, PEOPLE[1:]),
    Path("SCIM leaver returns, takes over, resumes", scim_leaver_returns_takes_over_resumes, PEOPLE[1:]),
    Path("suspend and resume on top of the hold", owner_suspends_and_resumes_on_top, PEOPLE[1:]),
    Path("sweeps", sweeps_run, ("system",)),
    Path("reconciliation with the IdP copy re-enabled", reconcile_when_the_idp_copy_is_enabled, ("system",)),
    Path("outbox delivery", delivery_runs, ("system",)),
    Path("break glass again", break_glass_again, PEOPLE[1:]),
    Path("a direct UPDATE", database_write, ("system",)),
]


@pytest.mark.parametrize(("path", "role"), matrix(PATHS), ids=cell_id)
def test_no_path_lifts_a_hold_but_security_or_an_admin_with_a_reason(held, path, role):
    path.attempt(held, role)
    assert_held_or_properly_lifted(held)


@pytest.mark.parametrize("role", ["security", "admin"])
def test_the_one_door_does_open(held, role):
    """The matrix is not green because nothing can lift a hold: security and admins can, with a reason."""
    lift_page_with_reason(held, role)
    assert {held.fresh(k).state for k in HELD} == {ClientState.ACTIVE}
    assert_held_or_properly_lifted(held)


def test_an_owner_suspension_stays_the_owners(world):
    client, _ = approved_client(world, scope="tickets:read", requested_ttl=3600, internal_only=True)
    http = world.http("owner")
    http.post(f"/inventory/mine/{client.registration_id}/suspend/", {"reason": "pausing it"})
    assert Client.objects.get(pk=client.pk).state == ClientState.SUSPENDED
    http.post(f"/inventory/mine/{client.registration_id}/resume/")
    assert Client.objects.get(pk=client.pk).state == ClientState.ACTIVE
