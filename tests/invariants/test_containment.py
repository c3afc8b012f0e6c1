"""Invariant 3 — containment means containment.

After break glass by initial access token, by trusted issuer and by lineage: the token registers nothing
more, the issuer's statements are refused, the lineage root spawns nothing more, pending requests of the leaked
credentials are never approved, and no contained client is active again — unless security or an admin undid it
on purpose (a hold lift with a reason, a spawn right restored, an admin re-enabling a credential in admin).

And suspending or ending a client reaches its live descendants, whichever door does it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import InitialAccessToken, RegistrationRequest, TrustedIssuer
from inventory import lifecycle as lc
from inventory.breakglass import breakglass_execute
from inventory.choices import ENDED_STATES, ClientState
from inventory.containment import client_hold_lift, client_hold_place
from inventory.lifecycle_policies import run_lifecycle_policies
from inventory.models import Client
from inventory.sweeps import sweep_expired, sweep_orphans, sweep_run
from portal.models import AuditEvent, User
from portal.roles import can_hold_clients
from tests.factories import TokenFactory
from tests.invariants.support import (
    PEOPLE,
    Path,
    approved_client,
    body,
    cell_id,
    matrix,
    refused_ok,
    register_http,
    rfc7592,
    scim,
    sign_statement,
    trusted_issuer,
)

pytestmark = pytest.mark.django_db
CONTAINED = ("by_token", "by_token_child", "by_issuer", "lineage_root", "lineage_child")


@pytest.fixture
def contained(world):
    by_token, rat = approved_client(
        world, scope="tickets:read", requested_ttl=3600, internal_only=True, name="token-agent"
    )
    child = register_http(rat, body(scope="tickets:read", requested_ttl=600, client_name="token-child"))
    assert child.status_code == 201, child.content
    pending = register_http(world.token_plaintext, body(scope="tickets:write", client_name="pending-agent"))
    assert pending.status_code == 202, pending.content
    issuer = trusted_issuer(world)
    by_issuer = register_http(None, body(software_statement=sign_statement(), client_name="ci-agent"))
    assert by_issuer.status_code == 201, by_issuer.content
    plaintext2 = "rat_lineage_" + "y" * 28
    TokenFactory(
        owner=world.user("owner"), plaintext=plaintext2, max_uses=10, allowed_scopes=["tickets:read"], idp=world.idp
    )
    root = register_http(plaintext2, body(scope="tickets:read", client_name="lineage-root"))
    root_rat = root.json()["registration_access_token"]
    lineage_child = register_http(root_rat, body(scope="tickets:read", requested_ttl=600, client_name="lin-child"))
    assert root.status_code == lineage_child.status_code == 201
    world.clients.update(
        {
            "by_token": by_token,
            "by_token_child": Client.objects.get(registration_id=child.json()["registration_id"]),
            "by_issuer": Client.objects.get(registration_id=by_issuer.json()["registration_id"]),
            "lineage_root": Client.objects.get(registration_id=root.json()["registration_id"]),
            "lineage_child": Client.objects.get(registration_id=lineage_child.json()["registration_id"]),
        }
    )
    world.bearers.update(
        by_token=rat,
        by_token_child=child.json()["registration_access_token"],
        lineage_root=root_rat,
        lineage_child=lineage_child.json()["registration_access_token"],
    )
    world.notes.update(
        issuer=issuer, pending=RegistrationRequest.objects.get(public_id=pending.json()["registration_id"])
    )
    security = world.user("security")
    breakglass_execute(user=security, scope="token", value=world.token.prefix, action="suspend", reason="leak A")
    breakglass_execute(user=security, scope="issuer", value=issuer.name, action="suspend", reason="leak B")
    breakglass_execute(
        user=security,
        scope="lineage",
        value=world.clients["lineage_root"].registration_id,
        action="suspend",
        reason="runaway agent",
    )
    world.notes["clients"] = Client.objects.count()
    world.notes["children_of_root"] = Client.objects.filter(parent=world.clients["lineage_root"]).count()
    return world


def _undone_by_security_or_admin(action: str, object_id) -> bool:
    event = AuditEvent.objects.filter(action=action, object_id=str(object_id)).last()
    return bool(
        event and event.reason.strip() and event.actor_id and can_hold_clients(User.objects.get(pk=int(event.actor_id)))
    )


def assert_contained(world, role: str) -> None:
    token = InitialAccessToken.objects.get(pk=world.token.pk)
    issuer = TrustedIssuer.objects.get(pk=world.notes["issuer"].pk)
    if role != "admin":  # only an admin (Django admin) may bring a credential back
        assert token.revoked_at is not None, "the leaked token works again"
        assert issuer.enabled is False, "the leaked issuer is trusted again"
    assert RegistrationRequest.objects.get(pk=world.notes["pending"].pk).state == RequestState.WITHDRAWN
    assert Client.objects.count() == world.notes["clients"] or role == "admin", "a contained credential registered"
    root = world.fresh("lineage_root")
    if root.spawn_revoked_at is None:
        assert _undone_by_security_or_admin("client.spawn_restore", root.registration_id)
    elif Client.objects.filter(parent=root).count() != world.notes["children_of_root"]:
        pytest.fail("the lineage root spawned although its spawn right was revoked")
    for key in CONTAINED:
        client = world.fresh(key)
        if client.state == ClientState.ACTIVE:
            assert _undone_by_security_or_admin("client.hold_lift", client.registration_id), key


# --- the doors ----------------------------------------------------------------------------------------------


def agent_registers_with_the_token(world, role):
    register_http(world.token_plaintext, body(client_name="after-the-leak"))


def agent_registers_with_the_issuers_statement(world, role):
    register_http(None, body(software_statement=sign_statement(), client_name="after-the-leak"))


def agents_spawn(world, role):
    for key in ("by_token", "by_token_child", "lineage_root", "lineage_child"):
        register_http(world.bearers[key], body(scope="tickets:read", client_name="spawned-after"))


def security_lifts_then_the_root_spawns(world, role):
    client_hold_lift(client=world.fresh("lineage_root"), user=world.user("security"), reason="root cleared")
    response = register_http(world.bearers["lineage_root"], body(scope="tickets:read"))
    assert response.status_code == 401 and "spawn" in response.json()["error_description"]


def owner_page_resumes(world, role):
    http = world.http(role)
    for key in CONTAINED:
        http.post(f"/inventory/mine/{world.clients[key].registration_id}/resume/")


def tokens_page(world, role):
    http = world.http(role)
    http.post(f"/tokens/{world.token.pk}/revoke", {"reason": "again"})
    http.get(f"/tokens/{world.token.pk}/")


def approver_page_approves_the_leaked_request(world, role):
    world.http(role).post(
        f"/approvals/{world.notes['pending'].public_id}/decide/", {"decision": "approve", "reason": "looks fine"}
    )


def api_approves_the_leaked_request(world, role):
    world.http(role).post(
        f"/api/v1/requests/{world.notes['pending'].public_id}/approve/",
        {"reason": "fine"},
        content_type="application/json",
    )


def admin_revives_the_credentials(world, role):
    http = world.http(role)
    token = InitialAccessToken.objects.get(pk=world.token.pk)
    http.post(
        f"/admin/approvals/initialaccesstoken/{token.pk}/change/",
        {
            "owner": token.owner_id,
            "purpose": token.purpose,
            "allowed_scopes": '["tickets:read"]',
            "max_ttl_seconds": token.max_ttl_seconds,
            "max_uses": token.max_uses,
            "expires_at_0": "2099-01-01",
            "expires_at_1": "00:00:00",
            "revoked_at_0": "",
            "revoked_at_1": "",
        },
    )
    issuer = world.notes["issuer"]
    http.post(
        f"/admin/approvals/trustedissuer/{issuer.pk}/change/",
        {
            "name": issuer.name,
            "kind": issuer.kind,
            "issuer": issuer.issuer,
            "audience": issuer.audience,
            "jwks": '{"keys": []}',
            "subject": issuer.subject,
            "owner": issuer.owner_id,
            "purpose": issuer.purpose,
            "allowed_scopes": '["tickets:read"]',
            "max_ttl_seconds": 3600,
            "internal_only": "on",
            "enabled": "on",
        },
    )
    agent_registers_with_the_token(world, role)


def spawn_right_restore_page(world, role):
    world.http(role).post(
        f"/inventory/{world.clients['lineage_root'].registration_id}/restore-spawn/", {"reason": "reviewed"}
    )
    agents_spawn(world, role)


def sweeps_run(world, role):
    for now in (timezone.now(), timezone.now() + timedelta(days=40)):
        sweep_expired(now=now)
        sweep_orphans(now=now)
        run_lifecycle_policies(now=now)
        sweep_run("lapsed", now=now)


CONTAINMENT_PATHS = [
    Path("RFC 7591 with the revoked token", agent_registers_with_the_token, ("agent",)),
    Path("RFC 7591 with the disabled issuer's statement", agent_registers_with_the_issuers_statement, ("agent",)),
    Path("RFC 7591 spawns from contained clients", agents_spawn, ("agent",)),
    Path("hold lifted, then the root spawns", security_lifts_then_the_root_spawns, ("agent",)),
    Path("owner-page resume", owner_page_resumes),
    Path("tokens page", tokens_page),
    Path("approver page approves the leaked token's request", approver_page_approves_the_leaked_request),
    Path("management API approves the leaked token's request", api_approves_the_leaked_request),
    Path("Django admin revives the token and the issuer", admin_revives_the_credentials),
    Path("spawn-right restore page, then spawns", spawn_right_restore_page),
    Path("sweeps", sweeps_run, ("system",)),
]


@pytest.mark.parametrize(("path", "role"), matrix(CONTAINMENT_PATHS), ids=cell_id)
def test_nothing_escapes_containment(contained, path, role):
    assert_contained(contained, role)
    path.attempt(contained, role)
    assert_contained(contained, role)


# --- cascades ---------------------------------------------------------------------------------------------------


@pytest.fixture
def family(world):
    """A parent, its child (handed to another owner) and grandchild, all active."""
    parent, rat = approved_client(
        world, scope="tickets:read", requested_ttl=3600, internal_only=True, name="family-parent"
    )
    child = register_http(rat, body(scope="tickets:read", requested_ttl=3000, client_name="family-child"))
    child_rat = child.json()["registration_access_token"]
    grandchild = register_http(child_rat, body(scope="tickets:read", requested_ttl=2000, client_name="family-gc"))
    assert child.status_code == grandchild.status_code == 201
    world.clients.update(
        parent=parent,
        child=Client.objects.get(registration_id=child.json()["registration_id"]),
        grandchild=Client.objects.get(registration_id=grandchild.json()["registration_id"]),
    )
    world.bearers["parent"] = rat
    Client.objects.filter(pk=world.clients["child"].pk).update(owner=world.user("other_owner"))
    return world


def assert_descendants_follow(world) -> None:
    """No client is active under a suspended or ended ancestor, and none is live under an ended one."""
    for client in Client.objects.exclude(parent=None):
        ancestor = client.parent
        while ancestor is not None:
            if ancestor.state in ENDED_STATES:
                assert client.state in ENDED_STATES, (client.name, client.state, "under ended", ancestor.name)
            if ancestor.state == ClientState.SUSPENDED:
                assert client.state != ClientState.ACTIVE, (client.name, "active under suspended", ancestor.name)
            ancestor = ancestor.parent


def owner_page_suspends_the_parent(world, role):
    world.http(role).post(f"/inventory/mine/{world.clients['parent'].registration_id}/suspend/", {"reason": "x"})


def owner_page_retires_the_parent(world, role):
    world.http(role).post(f"/inventory/mine/{world.clients['parent'].registration_id}/retire/", {"reason": "x"})


def owner_page_bulk_retires_the_parent(world, role):
    world.http(role).post(
        "/inventory/mine/bulk/", {"action": "retire", "ids": [world.clients["parent"].registration_id]}
    )


def agent_deletes_the_parent(world, role):
    rfc7592("DELETE", world.clients["parent"].registration_id, world.bearers["parent"])


def security_holds_the_parent(world, role):
    with refused_ok():
        client_hold_place(client=world.fresh("parent"), user=world.user(role), reason="contain")


def hold_page_on_the_parent(world, role):
    world.http(role).post(f"/inventory/{world.clients['parent'].registration_id}/hold/", {"reason": "contain"})


def break_glass_on_the_owner(world, role):
    for action in ("suspend", "retire"):
        with refused_ok():
            breakglass_execute(user=world.user(role), scope="owner", value="inv-owner", action=action, reason="x")


def expiry_sweep(world, role):
    sweep_expired(now=timezone.now() + timedelta(seconds=3601))


def orphan_sweep_after_scim(world, role):
    owner = world.user("owner")
    scim(
        "PATCH",
        f"Users/{owner.pk}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    )
    sweep_orphans()
    Client.objects.filter(pk=world.clients["parent"].pk).update(expires_at=timezone.now() + timedelta(days=30))
    sweep_orphans(now=timezone.now() + timedelta(hours=73))


def owner_resumes_the_child_under_a_held_parent(world, role):
    with refused_ok():
        lc.client_suspend(client=world.fresh("parent"), user=world.user("admin"), reason="admin hold")
    for key in ("child", "grandchild"):
        with refused_ok():
            lc.client_resume(client=world.fresh(key), user=world.user(role))


def owner_suspends_the_parent_then_resumes_the_child(world, role):
    with refused_ok():
        lc.client_suspend(client=world.fresh("parent"), user=world.user("owner"), reason="pause")
    for key in ("child", "grandchild"):
        world.http(role).post(f"/inventory/mine/{world.clients[key].registration_id}/resume/")
        with refused_ok():
            lc.client_resume(client=world.fresh(key), user=world.user(role))


CASCADE_PATHS = [
    Path("owner-page suspend", owner_page_suspends_the_parent),
    Path("owner-page retire", owner_page_retires_the_parent),
    Path("owner-page bulk retire", owner_page_bulk_retires_the_parent),
    Path("RFC 7592 DELETE by the agent", agent_deletes_the_parent, ("agent",)),
    Path("hold service", security_holds_the_parent, PEOPLE[1:]),
    Path("hold page", hold_page_on_the_parent),
    Path("break glass by owner", break_glass_on_the_owner, PEOPLE[1:]),
    Path("expiry sweep", expiry_sweep, ("system",)),
    Path("SCIM leaver, orphan sweep suspends", orphan_sweep_after_scim, ("system",)),
    Path("resume a child under a held parent", owner_resumes_the_child_under_a_held_parent, PEOPLE[1:]),
    Path("resume a child under a suspended parent", owner_suspends_the_parent_then_resumes_the_child, PEOPLE[1:]),
]


@pytest.mark.parametrize(("path", "role"), matrix(CASCADE_PATHS), ids=cell_id)
def test_suspending_or_ending_reaches_every_live_descendant(family, path, role):
    path.attempt(family, role)
    assert_descendants_follow(family)


def test_the_cascades_did_happen(family):
    """Guard against a vacuous matrix: the owner's suspend really suspends the whole family."""
    owner_page_suspends_the_parent(family, "owner")
    assert {family.fresh(k).state for k in ("parent", "child", "grandchild")} == {ClientState.SUSPENDED}
