"""Holds: a suspension by security or an admin only they can lift, with a reason; the owner sees why.

Regression (issue 13): security suspended a client through break glass, the owner POSTed
``/inventory/mine/<id>/resume/`` and it was active again.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory.breakglass import breakglass_execute
from inventory.choices import ClientState, HoldKind, OutboxOperation
from inventory.containment import client_hold_lift, client_hold_place
from inventory.lifecycle import (
    ClientHeld,
    LifecycleError,
    PermissionRefused,
    client_resume,
    client_suspend,
    client_transition,
    clients_transition_many,
)
from inventory.models import Client, OutboxEntry
from portal.audit import Actor
from portal.models import AuditEvent
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db


def state(client) -> str:
    return Client.objects.get(pk=client.pk).state


@pytest.fixture
def broken_glass(owner, security_user):
    client = ClientFactory(owner=owner, name="leaky-agent")
    breakglass_execute(
        user=security_user, scope="owner", value=owner.username, action="suspend", reason="credential leak INC-42"
    )
    return Client.objects.get(pk=client.pk)


def test_owner_cannot_resume_after_break_glass(client, owner, broken_glass):
    """Regression: the owner's resume made a break-glass suspension undone."""
    client.force_login(owner)
    response = client.post(f"/inventory/mine/{broken_glass.registration_id}/resume/", follow=True)
    assert state(broken_glass) == ClientState.SUSPENDED
    html = response.content.decode()
    assert "is held (Break glass) by ciso" in html and "credential leak INC-42" in html
    assert "only security or an admin can lift the hold" in html
    assert not AuditEvent.objects.filter(action="client.resume").exists()


def test_the_hold_refuses_every_resume_even_an_admins(owner, admin_user, broken_glass):
    for user in (owner, admin_user):
        with pytest.raises(ClientHeld, match="only security or an admin can lift the hold"):
            client_resume(client=broken_glass, user=user)
    with pytest.raises(ClientHeld):
        client_transition(client=broken_glass, target=ClientState.ACTIVE, actor=Actor.system("test"))
    with transaction.atomic():
        result = clients_transition_many(clients=[broken_glass], target=ClientState.ACTIVE, actor=Actor.system("test"))
    assert result.skipped == [broken_glass.pk] and state(broken_glass) == ClientState.SUSPENDED


def test_the_database_refuses_a_held_active_client(broken_glass):
    with pytest.raises(IntegrityError), transaction.atomic():
        Client.objects.filter(pk=broken_glass.pk).update(state=ClientState.ACTIVE)


def test_owner_suspensions_stay_owner_liftable(client, owner):
    mine = ClientFactory(owner=owner)
    client.force_login(owner)
    client.post(f"/inventory/mine/{mine.registration_id}/suspend/", {"reason": "pause"})
    fresh = Client.objects.get(pk=mine.pk)
    assert (fresh.state, fresh.hold_kind) == (ClientState.SUSPENDED, "")
    client.post(f"/inventory/mine/{mine.registration_id}/resume/")
    assert state(mine) == ClientState.ACTIVE


def test_an_admin_suspending_someone_elses_client_places_a_hold(owner, admin_user):
    theirs = ClientFactory(owner=owner)
    client_suspend(client=theirs, user=admin_user, reason="policy violation: shared secret in logs")
    fresh = Client.objects.get(pk=theirs.pk)
    assert (fresh.hold_kind, fresh.hold_by_id) == (HoldKind.ADMIN, admin_user.pk)
    assert fresh.hold_reason == "policy violation: shared secret in logs"
    with pytest.raises(ClientHeld):
        client_resume(client=fresh, user=owner)


def test_security_lifts_a_hold_with_a_reason(owner, security_user, broken_glass):
    outcome = client_hold_lift(client=broken_glass, user=security_user, reason="false alarm, INC-42 closed")
    fresh = Client.objects.get(pk=broken_glass.pk)
    assert (fresh.state, fresh.hold_kind, fresh.hold_reason) == (ClientState.ACTIVE, "", "")
    assert outcome.resumed == [fresh.registration_id]
    lift = AuditEvent.objects.get(action="client.hold_lift")
    assert (lift.actor_label, lift.reason) == ("ciso", "false alarm, INC-42 closed")
    assert lift.before["hold"]["kind"] == "break_glass"
    assert AuditEvent.objects.filter(action="client.resume.hold_lifted").count() == 1
    assert OutboxEntry.objects.filter(client=fresh).order_by("-id").first().operation == OutboxOperation.UPDATE


def test_lifting_refusals_change_nothing(owner, approver, security_user, broken_glass):
    events = AuditEvent.objects.count()
    for user in (owner, approver, UserFactory(roles=["owner"])):
        with pytest.raises(PermissionRefused):
            client_hold_lift(client=broken_glass, user=user, reason="let me")
    with pytest.raises(LifecycleError, match="reason"):
        client_hold_lift(client=broken_glass, user=security_user, reason="   ")
    with pytest.raises(LifecycleError, match="not held"):
        client_hold_lift(client=ClientFactory(owner=owner, state=ClientState.SUSPENDED), user=security_user, reason="x")
    fresh = Client.objects.get(pk=broken_glass.pk)
    assert (fresh.state, fresh.hold_kind) == (ClientState.SUSPENDED, HoldKind.BREAK_GLASS)
    assert AuditEvent.objects.count() == events


def test_lifting_restores_what_the_hold_suspended_and_nothing_more(owner, security_user):
    parent = ClientFactory(owner=owner)
    child = ClientFactory(owner=owner, parent=parent, depth=1)
    paused = ClientFactory(owner=owner, parent=parent, depth=1, state=ClientState.SUSPENDED)
    expired = ClientFactory(owner=owner, parent=parent, depth=1, expires_at=timezone.now() + timedelta(seconds=1))
    client_hold_place(client=parent, user=security_user, reason="runaway spawning")
    held = {c.registration_id: c for c in Client.objects.all()}
    assert {c.hold_kind for c in held.values()} == {HoldKind.SECURITY, HoldKind.CONTAINMENT}
    assert len({c.hold_ref for c in held.values()}) == 1
    assert held[paused.registration_id].state == ClientState.SUSPENDED

    outcome = client_hold_lift(
        client=parent, user=security_user, reason="reviewed", now=timezone.now() + timedelta(seconds=5)
    )
    assert set(outcome.lifted) == set(held)
    assert sorted(outcome.resumed) == sorted([parent.registration_id, child.registration_id])
    assert outcome.still_suspended == {
        paused.registration_id: "its owner had suspended it before the hold",
        expired.registration_id: "past its expiry",
    }
    assert state(paused) == ClientState.SUSPENDED and not Client.objects.get(pk=paused.pk).hold_kind
    client_resume(client=paused, user=owner)  # the owner's own suspension is theirs again
    assert state(paused) == ClientState.ACTIVE


def test_my_clients_shows_the_hold_and_offers_no_resume(client, owner, broken_glass):
    client.force_login(owner)
    html = client.get("/inventory/mine/").content.decode()
    assert 'data-hold="break_glass"' in html and "held: break glass" in html
    assert "by ciso" in html and "credential leak INC-42" in html
    assert f"/inventory/mine/{broken_glass.registration_id}/resume/" not in html
    assert "only security or an admin can lift it" in html


def test_explain_page_shows_the_hold_and_the_lift_only_to_security(client, owner, security_user, broken_glass):
    url = f"/inventory/{broken_glass.registration_id}/"
    client.force_login(owner)
    html = client.get(url).content.decode()
    assert 'id="hold-notice"' in html and "credential leak INC-42" in html and "by ciso" in html
    assert "lift-hold/" not in html
    client.force_login(security_user)
    assert f"/inventory/{broken_glass.registration_id}/lift-hold/" in client.get(url).content.decode()


def test_lift_hold_page_confirms_and_needs_a_reason(client, owner, approver, security_user, broken_glass):
    url = f"/inventory/{broken_glass.registration_id}/lift-hold/"
    for person in (owner, approver):
        client.force_login(person)
        assert client.get(url).status_code == 403
        assert client.post(url, {"reason": "mine"}).status_code == 403
    client.force_login(security_user)
    page = client.get(url)
    assert page.status_code == 200 and 'data-confirm="Lift the hold' in page.content.decode()
    assert client.post(url, {"reason": " "}).status_code == 400
    assert state(broken_glass) == ClientState.SUSPENDED
    done = client.post(url, {"reason": "contained, rotated"}, follow=True)
    assert "Hold lifted on 1 client(s); 1 resumed." in done.content.decode()
    assert state(broken_glass) == ClientState.ACTIVE


def test_hold_page_for_security(client, owner, security_user):
    target = ClientFactory(owner=owner)
    url = f"/inventory/{target.registration_id}/hold/"
    client.force_login(owner)
    assert client.post(url, {"reason": "mine"}).status_code == 403
    client.force_login(security_user)
    client.post(url, {"reason": "exfiltration suspected"})
    fresh = Client.objects.get(pk=target.pk)
    assert (fresh.state, fresh.hold_kind, fresh.hold_by_id) == (ClientState.SUSPENDED, "security", security_user.pk)
    again = client.get(url)
    assert "already held" in again.content.decode()


def test_a_descendant_is_not_let_out_before_its_held_ancestor(owner, security_user):
    parent = ClientFactory(owner=owner)
    child = ClientFactory(owner=owner, parent=parent, depth=1)
    client_hold_place(client=parent, user=security_user, reason="contain the family")
    with pytest.raises(LifecycleError, match=f"ancestor {parent.registration_id} is held too; lift that hold first"):
        client_hold_lift(client=Client.objects.get(pk=child.pk), user=security_user, reason="just the child")
    assert state(child) == ClientState.SUSPENDED
