"""The counts equal a full recount after every step of random sequences through every path that changes a client
or a registration request.

Hypothesis draws sequences of steps — registration (auto-approved, reviewed and approved, spawned, refused by
policy, left pending), a pending request approved, denied, withdrawn by its owner or by the agent (RFC 7592
DELETE), or lapsed by the sweep, an anonymous registration coalesced into an existing one, narrowing
(RFC 7592), renewal, suspension and resumption, break glass and the hold lift, a change that rolls back,
retirement, expiry, orphaning (SCIM and the admin's leaver action) and take-over, transfer, the Django admin,
reconciliation with the IdP (drift, a shadow client found), outbox delivery — with the folder run at random
points, and after each step compares what the counts say (folded rollups + unfolded deltas) with a recount of
the client and request tables. Each example starts from the same world (it runs in a savepoint rolled back afterwards).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from approvals.oauth2.anonymous import coalesce_reuse
from approvals.services import request_approve, request_deny, request_lapse_due, request_withdraw
from inventory import lifecycle as lc
from inventory.breakglass import breakglass_execute
from inventory.choices import LIVE_STATES
from inventory.connectors.base import RemoteClient
from inventory.containment import client_hold_lift
from inventory.counts import counts_current, counts_fold, counts_recount, kept_flags_drift
from inventory.lifecycle_policies.attest import client_attest
from inventory.models import Client, Team
from inventory.reconcile import reconcile_connection
from inventory.sweeps import sweep_expired, sweep_orphans
from portal.audit import Actor
from tests.invariants.support import (
    TamperableConnector,
    approved_client,
    body,
    deliver,
    refused_ok,
    register_http,
    rfc7592,
    scim,
)

pytestmark = pytest.mark.django_db


class Rollback(Exception):
    pass


def _clients(world) -> list[Client]:
    return list(Client.objects.order_by("pk"))


def _pick(world, i: int) -> Client | None:
    clients = _clients(world)
    return clients[i % len(clients)] if clients else None


def _owned(world, i: int) -> Client | None:
    """One of the owner's live clients (what the owner's own actions can act on)."""
    clients = list(Client.objects.filter(owner=world.user("owner"), state__in=LIVE_STATES).order_by("pk"))
    return clients[i % len(clients)] if clients else None


def _remember(world, response) -> None:
    if response.status_code in (201, 202):
        data = response.json()
        world.bearers[data["registration_id"]] = data["registration_access_token"]
        client = Client.objects.filter(registration_id=data["registration_id"]).first()
        if client is not None:
            deliver(client)


def register(world, i):
    _remember(world, register_http(world.token_plaintext, body(scope="tickets:read", requested_ttl=3600)))


def register_reviewed(world, i):
    response = register_http(world.token_plaintext, body(scope="tickets:read repo:write", requested_ttl=3600))
    assert response.status_code in (201, 202), response.content
    request = RegistrationRequest.objects.get(public_id=response.json()["registration_id"])
    for approver in ("approver", "approver2")[: max(1, request.approvals_needed)]:
        with refused_ok():
            request_approve(reg_request=request, approver=world.user(approver), reason="property approval")
    _remember(world, response)


def submit_for_review(world, i):
    """A registration that needs people, left pending (the steps below decide, withdraw or lapse it)."""
    _remember(world, register_http(world.token_plaintext, body(scope="tickets:read repo:write", requested_ttl=3600)))


def register_refused(world, i):
    register_http(world.token_plaintext, body(scope="tickets:read no-such:scope"))


def _pending(i: int) -> RegistrationRequest | None:
    pending = list(RegistrationRequest.objects.filter(state=RequestState.PENDING).order_by("pk"))
    return pending[i % len(pending)] if pending else None


def approve_pending(world, i):
    if request := _pending(i):
        for approver in ("approver", "approver2")[: max(1, request.approvals_needed)]:
            with refused_ok():
                request_approve(reg_request=request, approver=world.user(approver), reason="property approval")
        if client := Client.objects.filter(registration_id=request.public_id).first():
            deliver(client)


def deny_pending(world, i):
    if request := _pending(i):
        with refused_ok():
            request_deny(reg_request=request, approver=world.user("approver"), reason="property denial")


def withdraw_pending(world, i):
    if request := _pending(i):
        with refused_ok():
            request_withdraw(reg_request=request, actor=world.user("owner"), reason="not needed")


def agent_withdraws(world, i):
    """The agent deletes its own pending registration (RFC 7592 DELETE)."""
    pending = [(rid, rat) for rid, rat in world.bearers.items() if _pending_id(rid)]
    if pending:
        registration_id, rat = pending[i % len(pending)]
        rfc7592("DELETE", registration_id, rat)


def _pending_id(registration_id: str) -> bool:
    return RegistrationRequest.objects.filter(public_id=registration_id, state=RequestState.PENDING).exists()


def lapse(world, i):
    request_lapse_due(now=timezone.now() + timedelta(days=30))


def coalesce(world, i):
    """An identical anonymous registration answered with an existing one (its ``coalesced_count`` grows)."""
    approved = list(RegistrationRequest.objects.filter(state=RequestState.APPROVED).order_by("pk"))
    if approved:
        existing = approved[i % len(approved)]
        world.bearers[existing.public_id] = coalesce_reuse(
            existing=existing, actor=Actor.system("property"), source_ip=None, now=timezone.now()
        )


def spawn(world, i):
    bearers = list(world.bearers.items())  # in registration order: ids are random
    if bearers:
        _registration_id, rat = bearers[i % len(bearers)]
        _remember(world, register_http(rat, body(scope="tickets:read", requested_ttl=600, client_name="child")))


def narrow(world, i):
    bearers = list(world.bearers.items())  # in registration order: ids are random
    if not bearers:
        return
    registration_id, rat = bearers[i % len(bearers)]
    read = rfc7592("GET", registration_id, rat)
    if read.status_code == 200:
        rat = read.json()["registration_access_token"]
        world.bearers[registration_id] = rat
    update = rfc7592("PUT", registration_id, rat, body(scope="tickets:read", requested_ttl=600))
    if update.status_code == 200:
        world.bearers[registration_id] = update.json()["registration_access_token"]


def renew(world, i):
    if client := _owned(world, i):
        with refused_ok():
            lc.client_renew(client=client, user=world.user("owner"), ttl_seconds=3 * 3600)


def attest(world, i):
    """The owner re-attests a client: its attestation period starts again (the attestation counts)."""
    if client := _owned(world, i):
        with refused_ok():
            client_attest(client=client, user=world.user("owner"), note="property")


def suspend(world, i):
    if client := _owned(world, i):
        with refused_ok():
            lc.client_suspend(client=client, user=world.user("owner"), reason="property")


def resume(world, i):
    if client := _owned(world, i):
        with refused_ok():
            lc.client_resume(client=client, user=world.user("owner"), reason="property")


def break_glass(world, i):
    with refused_ok():
        breakglass_execute(
            user=world.user("security"), scope="owner", value="inv-owner", action="suspend", reason="INC"
        )


def lift_hold(world, i):
    for client in Client.objects.exclude(hold_kind="").order_by("pk")[:2]:
        with refused_ok():
            client_hold_lift(client=client, user=world.user("security"), reason="investigated")


def rolled_back_retirement(world, i):
    client = _pick(world, i)
    if client is None:
        return
    try:
        with transaction.atomic():
            with refused_ok():
                lc.client_retire(client=client, user=world.user("owner"), reason="changed my mind")
            raise Rollback
    except Rollback:
        pass


def retire(world, i):
    if client := _owned(world, i):
        with refused_ok():
            lc.client_retire(client=client, user=world.user("owner"), reason="done")


def expire(world, i):
    sweep_expired(now=timezone.now() + timedelta(days=8))


def scim_leaver_and_orphan_sweep(world, i):
    owner = world.user("owner")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    scim("PATCH", f"Users/{owner.pk}", patch)
    sweep_orphans(now=timezone.now() + timedelta(days=10))
    patch["Operations"][0]["value"] = True
    scim("PATCH", f"Users/{owner.pk}", patch)


def admin_leaver_action_and_take_over(world, i):
    other = world.user("other_owner")
    world.http("admin").post("/admin/portal/user/", {"action": "deactivate_users", "_selected_action": [other.pk]})
    sweep_orphans(now=timezone.now() + timedelta(days=10))
    for client in Client.objects.filter(orphaned_at__isnull=False, state__in=LIVE_STATES).order_by("pk")[:2]:
        with refused_ok():
            lc.client_take_over(client=client, user=world.user("admin"), reason="ours now")


def transfer(world, i):
    client = _owned(world, i)
    if client is None:
        return
    with refused_ok():
        offer = lc.client_transfer_offer(
            client=client, to_user=world.user("other_owner"), user=world.user("owner"), reason="yours"
        )
        lc.client_transfer_accept(offer=offer, user=world.user("other_owner"))


def admin_edits_purpose(world, i):
    if client := _pick(world, i):
        world.http("admin").post(f"/admin/inventory/client/{client.pk}/change/", {"purpose": "" if i % 2 else "x"})


def reconcile_with_drift_and_a_shadow(world, i):
    client = _pick(world, i)
    if client is not None and client.idp_client_id in TamperableConnector.remote:
        TamperableConnector.tamper(client, extra_scopes=("crm:read",))
    TamperableConnector.remote[f"shadow-{i}"] = RemoteClient(
        client_id=f"shadow-{i}", registrar_id=None, enabled=True, scopes=["tickets:read"], metadata={}
    )
    reconcile_connection(idp=world.idp)


def deliver_all(world, i):
    for client in _clients(world):
        deliver(client)


def team_deleted(world, i):
    Team.objects.filter(slug="prop-team").delete()


def fold(world, i):
    counts_fold(batch=1 + i % 7)


STEPS: list[Callable] = [
    register,
    register_reviewed,
    submit_for_review,
    register_refused,
    approve_pending,
    deny_pending,
    withdraw_pending,
    agent_withdraws,
    lapse,
    coalesce,
    spawn,
    narrow,
    renew,
    attest,
    suspend,
    resume,
    break_glass,
    lift_hold,
    rolled_back_retirement,
    retire,
    expire,
    scim_leaver_and_orphan_sweep,
    admin_leaver_action_and_take_over,
    transfer,
    admin_edits_purpose,
    reconcile_with_drift_and_a_shadow,
    deliver_all,
    team_deleted,
    fold,
]


def assert_counts_equal_a_recount(after: str) -> None:
    current, recount = counts_current(), counts_recount()
    for name in recount:
        assert current[name] == recount[name], f"after {after}: {name} off by {recount[name] - current[name]}"
    # the flags the database keeps (inventory.flag_triggers, approvals.approval_flags) equal a recomputation too
    assert kept_flags_drift() == {"clients": 0, "approvals": 0}, f"after {after}"


@pytest.fixture
def property_world(world):
    client, rat = approved_client(world, scope="tickets:read docs:read", requested_ttl=3600, name="seed")
    team = Team.objects.create(name="Prop team", slug="prop-team")
    Client.objects.filter(pk=client.pk).update(team=team)
    world.bearers[client.registration_id] = rat
    return world


@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.tuples(st.sampled_from(STEPS), st.integers(0, 50)), min_size=2, max_size=8))
def test_the_counts_equal_a_recount_after_every_step(property_world, steps):
    world = property_world
    bearers, remote = dict(world.bearers), dict(TamperableConnector.remote)
    cache.clear()  # rate limits start afresh for each example
    savepoint = transaction.savepoint()
    try:
        assert_counts_equal_a_recount("the world was built")
        for step, i in steps:
            step(world, i)
            assert_counts_equal_a_recount(f"{step.__name__}({i})")
        counts_fold()
        assert_counts_equal_a_recount("the final fold")
    finally:
        transaction.savepoint_rollback(savepoint)
        world.bearers = bearers
        TamperableConnector.remote.clear()
        TamperableConnector.remote.update(remote)


TOUR = [
    (register, 0),
    (register_reviewed, 0),
    (register_refused, 0),
    (submit_for_review, 0),
    (submit_for_review, 0),
    (submit_for_review, 0),
    (submit_for_review, 0),
    (submit_for_review, 0),
    (approve_pending, 0),
    (deny_pending, 0),
    (withdraw_pending, 0),
    (agent_withdraws, 0),
    (fold, 2),
    (lapse, 0),
    (coalesce, 0),
    (spawn, 0),
    (narrow, 1),
    (renew, 0),
    (attest, 0),
    (suspend, 0),
    (resume, 0),
    (break_glass, 0),
    (lift_hold, 0),
    (rolled_back_retirement, 1),
    (transfer, 2),
    (admin_edits_purpose, 1),
    (reconcile_with_drift_and_a_shadow, 1),
    (deliver_all, 0),
    (fold, 3),
    (retire, 1),
    (scim_leaver_and_orphan_sweep, 0),
    (admin_leaver_action_and_take_over, 0),
    (expire, 0),
    (team_deleted, 0),
    (fold, 0),
]


def test_every_path_once_in_a_row(property_world):
    """Every step at least once, in an order where each one acts; the counts equal a recount after each."""
    from portal.models import AuditEvent

    assert {step for step, _ in TOUR} == set(STEPS)
    for step, i in TOUR:
        step(property_world, i)
        assert_counts_equal_a_recount(f"{step.__name__}({i})")
    acted = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "registration.accepted",
        "request.approved",
        "request.deny",
        "request.withdraw",
        "request.lapse",
        "registration.coalesced",
        "client.spawn",
        "client.narrow",
        "client.renewal_requested",
        "client.attest",
        "client.suspend",
        "client.resume",
        "client.suspend.breakglass",
        "client.hold_lift",
        "client.transfer_accept",
        "client.admin_change",
        "client.discovered",
        "client.orphaned",
        "client.take_over",
        "client.retire",
        "client.expired",
        "user.deactivate",
    } - acted == set()
    states = Counter(RegistrationRequest.objects.values_list("state", flat=True))
    assert states["denied"] and states["lapsed"] and states["refused"] and states["withdrawn"] >= 2, states
    assert RegistrationRequest.objects.filter(coalesced_count__gt=0).exists()
