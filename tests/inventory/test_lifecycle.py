"""The client transition map: every legal move works and is audited; every illegal one raises."""

from __future__ import annotations

import itertools

import pytest

from inventory.choices import CLIENT_TRANSITIONS, ClientState, OutboxOperation
from inventory.lifecycle import IllegalTransition, client_transition
from inventory.models import OutboxEntry
from portal.audit import Actor, verify_chain
from portal.models import AuditEvent
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
ALL_PAIRS = list(itertools.product(ClientState.values, ClientState.values))


@pytest.mark.parametrize("current,target", [p for p in ALL_PAIRS if p[1] not in CLIENT_TRANSITIONS[p[0]]])
def test_illegal_transitions_raise_and_change_nothing(current, target):
    client = ClientFactory(state=current)
    with pytest.raises(IllegalTransition):
        client_transition(client=client, target=target, actor=ACTOR)
    client.refresh_from_db()
    assert client.state == current
    assert AuditEvent.objects.count() == 0 and OutboxEntry.objects.count() == 0


@pytest.mark.parametrize("current,target", [p for p in ALL_PAIRS if p[1] in CLIENT_TRANSITIONS[p[0]]])
def test_legal_transitions_are_audited(current, target):
    client = ClientFactory(state=current)
    client_transition(client=client, target=target, actor=ACTOR, reason="because")
    client.refresh_from_db()
    assert client.state == target
    event = AuditEvent.objects.get()
    assert (event.action, event.object_id, event.reason) == (f"client.{target}", client.registration_id, "because")
    assert event.before["state"] == current and event.after["state"] == target


@pytest.mark.parametrize(
    "target,operation",
    [
        (ClientState.SUSPENDED, OutboxOperation.DISABLE),
        (ClientState.EXPIRED, OutboxOperation.DISABLE),
        (ClientState.RETIRED, OutboxOperation.DELETE),
        (ClientState.REVOKED, OutboxOperation.DELETE),
    ],
)
def test_transitions_queue_the_idp_change(target, operation):
    client = ClientFactory(state=ClientState.ACTIVE)
    client_transition(client=client, target=target, actor=ACTOR)
    assert list(OutboxEntry.objects.values_list("operation", flat=True)) == [operation]


def test_retiring_a_parent_retires_live_descendants_in_one_go():
    parent = ClientFactory()
    child = ClientFactory(parent=parent, depth=1)
    grandchild = ClientFactory(parent=child, depth=2)
    ended = ClientFactory(parent=parent, depth=1, state=ClientState.EXPIRED)
    client_transition(client=parent, target=ClientState.RETIRED, actor=ACTOR)
    for c in (child, grandchild):
        c.refresh_from_db()
        assert c.state == ClientState.RETIRED
    ended.refresh_from_db()
    assert ended.state == ClientState.EXPIRED
    assert AuditEvent.objects.filter(action="client.retired.cascade").count() == 2
    assert verify_chain()[1] is None
