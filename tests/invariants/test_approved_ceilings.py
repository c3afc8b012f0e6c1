"""Invariant 1 — approved ceilings stick.

A client never holds more than its last approval granted: no scope, audience or lifetime per renewal beyond the
ceiling, whichever door is tried and by whom; a high-tier client is never extended without a new approval by
the tier's number of distinct approvers.

The clients are made the production way: a medium client asked for 7 days and two scopes, its approver
narrowed it to one scope and 1 hour; a high client asked for 1 day and two scopes, its two approvers narrowed
it to one scope and 1 hour.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.choices import DecisionKind, RequestKind, RequestState
from approvals.models import RegistrationRequest
from approvals.services import request_approve
from inventory import lifecycle as lc
from inventory.breakglass import breakglass_execute
from inventory.containment import client_hold_lift
from inventory.lifecycle_policies import run_lifecycle_policies
from inventory.models import Client
from inventory.reconcile import reconcile_connection
from inventory.sweeps import sweep_expired, sweep_orphans, sweep_run
from portal.audit import Actor
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

HOUR = 3600
GRANTED = {"medium": {"tickets:write"}, "high": {"repo:write"}}
AUDIENCES = {"medium": {"https://tickets.internal"}, "high": set()}


@pytest.fixture
def ceilings(world):
    medium, medium_rat = approved_client(
        world,
        scope="tickets:write docs:read",
        requested_ttl=7 * 86400,
        grant_scopes=["tickets:write"],
        grant_ttl=HOUR,
        audiences=["https://tickets.internal"],
        name="medium-agent",
    )
    high, high_rat = approved_client(
        world,
        scope="repo:write tickets:read",
        requested_ttl=86400,
        grant_scopes=["repo:write"],
        grant_ttl=HOUR,
        name="high-agent",
    )
    world.clients.update(medium=medium, high=high)
    world.bearers.update(medium=medium_rat, high=high_rat)
    world.notes["high_expires"] = high.expires_at
    return world


def assert_within_ceiling(world) -> None:
    now = timezone.now()
    for key in ("medium", "high"):
        client = world.fresh(key)
        assert set(client.scopes) <= GRANTED[key], (key, client.scopes)
        assert set(client.audiences) <= AUDIENCES[key], (key, client.audiences)
        assert client.ceiling_ttl_seconds <= HOUR and set(client.ceiling_scopes) <= GRANTED[key], key
        assert client.expires_at <= now + timedelta(seconds=HOUR), (key, client.expires_at - now)
    high = world.fresh("high")
    if high.expires_at != world.notes["high_expires"]:
        # The only way a high-tier client lives longer: a renewal two distinct approvers approved.
        renewal = RegistrationRequest.objects.get(client=high, kind=RequestKind.RENEWAL, state=RequestState.APPROVED)
        approvers = set(renewal.decisions.filter(kind=DecisionKind.APPROVE).values_list("approver", flat=True))
        assert len(approvers) >= 2


def _renewal_of_high(world) -> RegistrationRequest:
    """The owner's one-click renewal of the high client: filed for review, asking for the approved hour."""
    lc.client_renew(client=world.fresh("high"), user=world.user("owner"))
    return RegistrationRequest.objects.get(
        client=world.clients["high"], kind=RequestKind.RENEWAL, state=RequestState.PENDING
    )


# --- the doors -------------------------------------------------------------------------------------------------


def owner_page_renew(world, role):
    http = world.http(role)
    for key in ("medium", "high"):
        http.post(f"/inventory/mine/{world.clients[key].registration_id}/renew/", {"reason": "matrix"})


def owner_page_bulk_renew(world, role):
    ids = [world.clients[k].registration_id for k in ("medium", "high")]
    world.http(role).post("/inventory/mine/bulk/", {"action": "renew", "ids": ids})


def service_renew_for_longer(world, role):
    for key in ("medium", "high"):
        with refused_ok():
            if role == "system":
                lc.client_renew(client=world.fresh(key), actor=Actor.system("matrix"), ttl_seconds=30 * 86400)
            else:
                lc.client_renew(client=world.fresh(key), user=world.user(role), ttl_seconds=30 * 86400)


def agent_put_widening(world, role):
    for key, scope in (("medium", "tickets:write docs:read crm:read"), ("high", "repo:write tickets:read")):
        rfc7592(
            "PUT",
            world.clients[key].registration_id,
            world.bearers[key],
            body(scope=scope, requested_ttl=30 * 86400, internal_only=False),
        )


def agent_narrows_then_owner_renews(world, role):
    response = rfc7592(
        "PUT",
        world.clients["medium"].registration_id,
        world.bearers["medium"],
        body(scope="tickets:write", requested_ttl=600, internal_only=False, audiences=["https://tickets.internal"]),
    )
    assert response.status_code == 200, response.content
    lc.client_renew(client=world.fresh("medium"), user=world.user("owner"))


def agent_spawns_a_long_lived_child(world, role):
    for key in ("medium", "high"):
        register_http(world.bearers[key], body(scope=" ".join(GRANTED[key]), requested_ttl=30 * 86400))


def approver_page_widens_a_renewal(world, role):
    renewal = _renewal_of_high(world)
    http = world.http(role)
    url = f"/approvals/{renewal.public_id}/decide/"
    http.post(url, {"decision": "approve", "reason": "widen", "ttl_seconds": 86400})
    http.post(url, {"decision": "approve", "reason": "widen", "narrow": "1", "scopes": ["repo:write", "tickets:read"]})
    http.post(url, {"decision": "approve", "reason": "as asked"})  # a plain approval is fine: one of two
    with refused_ok():
        request_approve(reg_request=renewal, approver=world.user("approver2"), reason="second pair of eyes")


def api_widens_a_renewal(world, role):
    renewal = _renewal_of_high(world)
    http = world.http(role)
    url = f"/api/v1/requests/{renewal.public_id}/approve/"
    http.post(url, {"reason": "widen", "ttl_seconds": 86400}, content_type="application/json")
    http.post(url, {"reason": "widen", "scopes": ["repo:write", "tickets:read"]}, content_type="application/json")


def api_writes_the_client(world, role):
    http = world.http(role)
    for key in ("medium", "high"):
        url = f"/api/v1/clients/{world.clients[key].registration_id}/"
        change = {
            "expires_at": (timezone.now() + timedelta(days=90)).isoformat(),
            "ceiling_ttl_seconds": 10**6,
            "scopes": ["repo:write", "tickets:write", "crm:read"],
        }
        for method in ("patch", "put", "post"):
            getattr(http, method)(url, change, content_type="application/json")


def admin_edits_the_client(world, role):
    http = world.http(role)
    for key in ("medium", "high"):
        client = world.fresh(key)
        http.post(
            f"/admin/inventory/client/{client.pk}/change/",
            {
                "purpose": "edited in admin",
                "expires_at_0": "2099-01-01",
                "expires_at_1": "00:00:00",
                "ceiling_ttl_seconds": 10**6,
                "scopes": '["repo:write", "crm:read"]',
                "state": "active",
            },
        )


def sweeps_run(world, role):
    for now in (timezone.now(), timezone.now() + timedelta(days=2)):
        sweep_expired(now=now)
        sweep_orphans(now=now)
        run_lifecycle_policies(now=now)
        sweep_run("lapsed", now=now)


def scim_leaver_returns_and_renews(world, role):
    owner = world.user("owner")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    scim("PATCH", f"Users/{owner.pk}", patch)
    sweep_orphans()
    patch["Operations"][0]["value"] = True
    scim("PATCH", f"Users/{owner.pk}", patch)
    for key in ("medium", "high"):
        with refused_ok():
            lc.client_take_over(client=world.fresh(key), user=world.user(role), reason="back")
        with refused_ok():
            lc.client_renew(client=world.fresh(key), user=world.user(role), ttl_seconds=30 * 86400)


def reconcile_after_tampering(world, role):
    world.idp.repair_drift = True
    world.idp.save(update_fields=["repair_drift"])
    for key in ("medium", "high"):
        TamperableConnector.tamper(world.fresh(key), extra_scopes=("crm:read", "db:prod:read"))
    reconcile_connection(idp=world.idp)
    for key in ("medium", "high"):
        deliver(world.fresh(key))


def break_glass_then_lift_then_renew(world, role):
    breakglass_execute(
        user=world.user("security"),
        scope="lineage",
        value=world.clients["medium"].registration_id,
        action="suspend",
        reason="matrix incident",
    )
    with refused_ok():
        client_hold_lift(client=world.fresh("medium"), user=world.user(role), reason="cleared")
    world.http(role).post(f"/inventory/mine/{world.clients['medium'].registration_id}/renew/")
    with refused_ok():
        lc.client_renew(client=world.fresh("medium"), user=world.user(role), ttl_seconds=7 * 86400)


PATHS = [
    Path("owner-page renew", owner_page_renew),
    Path("owner-page bulk renew", owner_page_bulk_renew),
    Path("renew service asking for 30 days", service_renew_for_longer, (*PEOPLE[1:], "system")),
    Path("RFC 7592 PUT widening", agent_put_widening, ("agent",)),
    Path("RFC 7592 PUT narrowing, then renew", agent_narrows_then_owner_renews, ("agent",)),
    Path("RFC 7591 spawn of a long-lived child", agent_spawns_a_long_lived_child, ("agent",)),
    Path("approver page widens a renewal", approver_page_widens_a_renewal),
    Path("management API widens a renewal", api_widens_a_renewal),
    Path("management API writes the client", api_writes_the_client),
    Path("Django admin edits the client", admin_edits_the_client),
    Path("sweeps", sweeps_run, ("system",)),
    Path("SCIM leaver returns, takes over, renews", scim_leaver_returns_and_renews, PEOPLE[1:]),
    Path("reconciliation after the IdP copy was widened", reconcile_after_tampering, ("system",)),
    Path("break glass, lift, renew", break_glass_then_lift_then_renew, PEOPLE[1:]),
]


@pytest.mark.parametrize(("path", "role"), matrix(PATHS), ids=cell_id)
def test_no_path_goes_beyond_the_approved_ceiling(ceilings, path, role):
    assert_within_ceiling(ceilings)  # the setup itself honours it
    path.attempt(ceilings, role)
    assert_within_ceiling(ceilings)


def test_the_setup_is_what_the_approvers_granted(ceilings):
    for key in ("medium", "high"):
        client = ceilings.fresh(key)
        assert (set(client.ceiling_scopes), client.ceiling_ttl_seconds) == (GRANTED[key], HOUR)
        assert set(client.ceiling_audiences) == AUDIENCES[key]
    assert Client.objects.get(pk=ceilings.clients["high"].pk).risk_tier == "high"
