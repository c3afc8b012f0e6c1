"""Delivery to a generic RFC 7591/7592 IdP that cannot list its clients (the real oidc-provider with
IDP_LISTING=off): a lost answer never becomes a duplicate or a stale token, and a refused management token is
a sync failure for a person, never "already gone" (inventory.outbox.journal)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.connectors import AccessDenied, Transient
from inventory.lifecycle import client_transition
from inventory.models import Client, OutboxEntry
from inventory.outbox import OutboxError, outbox_enqueue, outbox_resolve, outbox_retry, push, record
from inventory.outbox.batch import deliver_outbox_batch
from inventory.outbox.deliver import deliver_client_outbox, deliver_client_outbox_inline
from inventory.outbox.push import client_spec
from portal.audit import Actor, events_for
from tests.factories import UserFactory
from tests.provisioning import (  # noqa: F401 - fixtures
    _unlisted_idp,
    console_delete,
    idp_clients,
    markers_at_idp,
    register_agent,
    unlisted_connection,
    unlisted_idp,
)

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")


@pytest.fixture
def person(db):
    return UserFactory(username="uma-owner", roles=["owner"])


class Crash(Exception):
    """The worker dies: raised where a kill would stop it."""


def entries(client: Client) -> list[OutboxEntry]:
    return list(OutboxEntry.objects.filter(client=client).order_by("id"))


def lease_runs_out(client: Client) -> None:
    """What a killed worker leaves: its lease expires and the entry is due again."""
    OutboxEntry.objects.filter(client=client, status=OutboxStatus.PENDING).update(
        claimed_until=timezone.now() - timedelta(seconds=1), next_attempt_at=timezone.now()
    )


def crash_before_recording(monkeypatch) -> None:
    """The worker is killed after the IdP answered, before the outcome is recorded (state, audit, entry)."""

    def crash(claim, result):
        raise Crash("killed after the IdP answered")

    monkeypatch.setattr(record, "record_delivered", crash)


def lose_answers(monkeypatch, method: str, times: int = 1) -> list[str]:
    """The IdP acts on ``method`` but its answer never arrives (a read timeout), ``times`` times."""
    real_build = push.connector_for
    lost: list[str] = []

    def build(idp, *, timeout=None):
        connector = real_build(idp, timeout=timeout)
        original = getattr(connector, method)

        def acted_but_unanswered(*args, **kwargs):
            answer = original(*args, **kwargs)
            if len(lost) < times:
                lost.append(method)
                raise Transient(f"rfc7591: {method} timed out after 10s", reached_idp=True)
            return answer

        setattr(connector, method, acted_but_unanswered)
        return connector

    monkeypatch.setattr(push, "connector_for", build)
    return lost


def active_client(connection, person) -> Client:
    client = register_agent(idp=connection, owner=person, scopes=["tickets:read", "docs:read"])
    assert deliver_client_outbox(client.pk) is True
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    return client


def manageable(connection, client: Client) -> bool:
    """The stored registration access token still manages the client at the IdP."""
    client.refresh_from_db()
    try:
        push.connector_for(connection).get(client.idp_client_id, client.idp_state)
    except AccessDenied:
        return False
    return True


# -- 1. a crash between the IdP's create and our commit ------------------------------------------------------


def test_a_crash_after_the_idp_created_the_client_adopts_its_answer_instead_of_creating_a_duplicate(
    unlisted_connection,
    unlisted_idp,
    person,
    monkeypatch,  # noqa: F811
):
    client = register_agent(idp=unlisted_connection, owner=person)
    crash_before_recording(monkeypatch)
    with pytest.raises(Crash):
        deliver_client_outbox(client.pk)
    monkeypatch.undo()
    [at_idp] = idp_clients(unlisted_idp)
    # The answer was stored the moment it arrived, before the crash (encrypted, like every idp_state).
    client.refresh_from_db()
    assert client.idp_client_id == at_idp["client_id"] and client.idp_state["registration_access_token"]
    assert client.state == ClientState.PROVISIONING

    lease_runs_out(client)
    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE and client.idp_client_id == at_idp["client_id"]
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 1
    assert manageable(unlisted_connection, client)
    assert "client.idp_create_adopted" in [e.action for e in events_for("client", client.registration_id)]


def test_a_create_whose_answer_was_lost_is_not_repeated_but_handed_to_a_person(
    unlisted_connection,
    unlisted_idp,
    person,
    monkeypatch,
    admin_user,  # noqa: F811
):
    client = register_agent(idp=unlisted_connection, owner=person)
    lose_answers(monkeypatch, "create")

    deliver_client_outbox(client.pk)
    lease_runs_out(client)
    deliver_client_outbox(client.pk)  # a worker comes back to it: still no second create

    [entry] = entries(client)
    client.refresh_from_db()
    assert entry.status == OutboxStatus.DEAD and entry.last_error.startswith("Unconfirmed:")
    assert client.registration_id in entry.last_error and "timed out" in entry.last_error
    assert client.sync_failed is True and client.state == ClientState.PROVISIONING
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 1  # the one the IdP made: never two

    # The person finds it at the IdP, deletes it there and retries: one client, managed by Registrar.
    console_delete(unlisted_idp, idp_clients(unlisted_idp)[0]["client_id"])
    monkeypatch.undo()
    outbox_retry(entry=entry, actor=Actor.user(admin_user))
    assert deliver_client_outbox(client.pk) is True
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE and client.sync_failed is False
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 1
    retry = [e for e in events_for("client", client.registration_id) if e.action == "outbox.retry"]
    assert retry[0].after["unconfirmed_call_cleared"] is True


def test_an_admin_may_opt_in_to_retrying_lost_creates(unlisted_connection, unlisted_idp, person, monkeypatch):  # noqa: F811
    unlisted_connection.config = {**unlisted_connection.config, "recreate_unconfirmed": True}
    unlisted_connection.save()
    client = register_agent(idp=unlisted_connection, owner=person)
    lose_answers(monkeypatch, "create")
    deliver_client_outbox(client.pk)
    lease_runs_out(client)
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    # The price the admin accepted: the first copy is orphaned at an IdP nobody can list.
    assert client.state == ClientState.ACTIVE and markers_at_idp(unlisted_idp)[client.registration_id] == 2


def test_a_create_that_never_reached_the_idp_is_retried_normally(unlisted_connection, unlisted_idp, person):  # noqa: F811
    good = dict(unlisted_connection.config)
    unlisted_connection.config = {**good, "registration_endpoint": "http://127.0.0.1:9/reg"}
    unlisted_connection.save()
    client = register_agent(idp=unlisted_connection, owner=person)

    assert deliver_client_outbox(client.pk) is False
    [entry] = entries(client)
    assert entry.status == OutboxStatus.PENDING and entry.idp_call_started_at is None  # nothing unconfirmed
    assert "ConnectError" in entry.last_error

    unlisted_connection.config = good
    unlisted_connection.save()
    lease_runs_out(client)
    assert deliver_client_outbox(client.pk) is True
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE and markers_at_idp(unlisted_idp)[client.registration_id] == 1


def test_the_registration_api_leaves_an_unlisted_idp_to_a_worker(unlisted_connection, unlisted_idp, person):  # noqa: F811
    client = register_agent(idp=unlisted_connection, owner=person)
    assert deliver_client_outbox_inline(client.pk, timeout=0.5) is False
    [entry] = entries(client)
    assert (entry.status, entry.attempts, entry.claimed_by) == (OutboxStatus.PENDING, 0, "")  # never attempted
    assert idp_clients(unlisted_idp) == []
    assert deliver_client_outbox(client.pk) is True  # the worker's full timeout


def test_the_batch_path_journals_an_unlisted_idp_too(unlisted_connection, unlisted_idp, person, monkeypatch):  # noqa: F811
    clients = [register_agent(idp=unlisted_connection, owner=person, name=f"b{n}") for n in range(3)]
    crash_before_recording(monkeypatch)
    with pytest.raises(Crash):
        deliver_outbox_batch([c.pk for c in clients])
    monkeypatch.undo()
    for client in clients:
        lease_runs_out(client)
    deliver_outbox_batch([c.pk for c in clients])
    markers = markers_at_idp(unlisted_idp)
    for client in clients:
        client.refresh_from_db()
        assert client.state == ClientState.ACTIVE, client.name
        assert markers[client.registration_id] == 1, client.name


# -- 2. a crash after a PUT that rotated the management token ----------------------------------------------


def test_a_crash_after_an_update_keeps_the_rotated_management_token(
    unlisted_connection,
    unlisted_idp,
    person,
    monkeypatch,  # noqa: F811
):
    client = active_client(unlisted_connection, person)
    old_token = client.idp_state["registration_access_token"]
    Client.objects.filter(pk=client.pk).update(scopes=["tickets:read"])
    outbox_enqueue(client=client, operation=OutboxOperation.UPDATE)
    crash_before_recording(monkeypatch)
    with pytest.raises(Crash):
        deliver_client_outbox(client.pk)
    monkeypatch.undo()
    client.refresh_from_db()
    assert client.idp_state["registration_access_token"] != old_token  # stored as it arrived

    lease_runs_out(client)
    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert [e.status for e in entries(client)] == [OutboxStatus.DONE, OutboxStatus.DONE]
    assert manageable(unlisted_connection, client)
    remote = push.connector_for(unlisted_connection).get(client.idp_client_id, client.idp_state)
    assert remote.scopes == ["tickets:read"]
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 1  # never recreated


def test_an_update_whose_answer_was_lost_is_a_sync_failure_not_a_second_client(
    unlisted_connection,
    unlisted_idp,
    person,
    monkeypatch,  # noqa: F811
):
    client = active_client(unlisted_connection, person)
    Client.objects.filter(pk=client.pk).update(scopes=["tickets:read"])
    outbox_enqueue(client=client, operation=OutboxOperation.UPDATE)
    lose_answers(monkeypatch, "update")
    deliver_client_outbox(client.pk)  # the IdP rotated the token in the answer we lost
    lease_runs_out(client)
    deliver_client_outbox(client.pk)

    update = entries(client)[1]
    client.refresh_from_db()
    assert update.status == OutboxStatus.DEAD and update.last_error.startswith("AccessDenied:")
    assert "earlier update's answer was lost" in update.last_error
    assert client.sync_failed is True and client.state == ClientState.ACTIVE
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 1


# -- 3. a refused management token is not "already gone" ----------------------------------------------------


def stale_token(connection, client: Client) -> None:
    """Someone else used the client's registration access token at the IdP, which rotated it."""
    spec = client_spec(client)
    push.connector_for(connection).update(client.idp_client_id, spec, client.idp_state)


@pytest.mark.parametrize("end", [ClientState.RETIRED, ClientState.EXPIRED])
def test_a_delete_refused_with_401_is_a_sync_failure_while_the_client_stays_live(
    unlisted_connection,
    unlisted_idp,
    person,
    end,
    client,
    admin_user,  # noqa: F811
):
    agent = active_client(unlisted_connection, person)
    stale_token(unlisted_connection, agent)

    client_transition(client=agent, target=end, actor=SYSTEM, reason="done")
    deliver_client_outbox(agent.pk)

    ending = entries(agent)[1]
    agent.refresh_from_db()
    assert ending.status == OutboxStatus.DEAD and ending.last_error.startswith("AccessDenied:")
    assert "status=401" in ending.last_error
    assert agent.sync_failed is True and agent.idp_disabled_at is None
    assert agent.idp_state.get("deleted") is None
    assert markers_at_idp(unlisted_idp)[agent.registration_id] == 1  # still live at the IdP, and we say so
    dead = [e for e in events_for("client", agent.registration_id) if e.action == "outbox.dead_lettered"]
    assert len(dead) == 1 and dead[0].after["operation"] == ending.operation

    # A person sees it, with what to do...
    client.force_login(admin_user)
    page = client.get("/inventory/sync-failures/").content.decode()
    assert agent.registration_id in page and "AccessDenied" in page
    assert "Check the IdP: delete the client there if it is still present" in page
    assert f"/inventory/sync-failures/{ending.pk}/resolve/" in page
    # ...removes it at the IdP and says so; Registrar records it, with the reason, and the flag drops.
    console_delete(unlisted_idp, agent.idp_client_id)
    response = client.post(
        f"/inventory/sync-failures/{ending.pk}/resolve/", {"reason": "deleted by hand in the IdP console"}
    )
    assert response.status_code == 302
    ending.refresh_from_db()
    agent.refresh_from_db()
    assert ending.status == OutboxStatus.RESOLVED
    assert agent.sync_failed is False and agent.idp_state == {"deleted": True} and agent.idp_disabled_at
    resolved = [e for e in events_for("client", agent.registration_id) if e.action == "outbox.resolved"]
    assert resolved[0].reason == "deleted by hand in the IdP console"
    assert resolved[0].actor_label == admin_user.username


def test_our_own_delete_whose_answer_was_lost_is_done_when_the_token_is_then_refused(
    unlisted_connection,
    unlisted_idp,
    person,
    monkeypatch,  # noqa: F811
):
    client = active_client(unlisted_connection, person)
    client_transition(client=client, target=ClientState.RETIRED, actor=SYSTEM)
    lose_answers(monkeypatch, "delete")
    deliver_client_outbox(client.pk)
    assert entries(client)[1].idp_call_started_at is not None  # unconfirmed
    lease_runs_out(client)
    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert entries(client)[1].status == OutboxStatus.DONE and client.sync_failed is False
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 0
    assert client.idp_state == {"deleted": True} and client.idp_disabled_at is not None


def test_deleting_a_client_whose_create_went_unanswered_asks_a_person(
    unlisted_connection,
    unlisted_idp,
    person,
    monkeypatch,
    admin_user,  # noqa: F811
):
    client = register_agent(idp=unlisted_connection, owner=person)
    lose_answers(monkeypatch, "create")
    deliver_client_outbox(client.pk)  # created at the IdP, answer lost: a sync failure
    client_transition(client=client, target=ClientState.RETIRED, actor=SYSTEM)
    deliver_client_outbox(client.pk)

    create, delete = entries(client)
    assert create.status == OutboxStatus.DEAD
    # No id to delete and no listing to find one by: not "gone", a question for a person.
    assert delete.status == OutboxStatus.DEAD and delete.last_error.startswith("Unconfirmed:")
    assert markers_at_idp(unlisted_idp)[client.registration_id] == 1

    with pytest.raises(OutboxError, match="say what you checked"):
        outbox_resolve(entry=delete, actor=Actor.user(admin_user), reason="  ")
    delete.refresh_from_db()
    assert delete.status == OutboxStatus.DEAD  # a refused resolution changes nothing
    console_delete(unlisted_idp, idp_clients(unlisted_idp)[0]["client_id"])
    outbox_resolve(entry=delete, actor=Actor.user(admin_user), reason="found and deleted at the IdP")
    client.refresh_from_db()
    create.refresh_from_db()
    assert create.status == OutboxStatus.SUPERSEDED  # the client has ended: its create is moot
    assert client.sync_failed is False and markers_at_idp(unlisted_idp)[client.registration_id] == 0


def test_only_a_dead_disable_or_delete_can_be_marked_resolved(unlisted_connection, person, admin_user, monkeypatch):  # noqa: F811
    client = register_agent(idp=unlisted_connection, owner=person)
    [create] = entries(client)
    with pytest.raises(OutboxError, match="not dead"):
        outbox_resolve(entry=create, actor=Actor.user(admin_user), reason="x")
    lose_answers(monkeypatch, "create")
    deliver_client_outbox(client.pk)
    create.refresh_from_db()
    assert create.status == OutboxStatus.DEAD
    with pytest.raises(OutboxError, match="only a dead disable or delete"):
        outbox_resolve(entry=create, actor=Actor.user(admin_user), reason="x")
    create.refresh_from_db()
    assert create.status == OutboxStatus.DEAD


def test_marking_resolved_needs_an_admin(client, person, unlisted_connection, monkeypatch):  # noqa: F811
    agent = register_agent(idp=unlisted_connection, owner=person)
    entry = entries(agent)[0]
    OutboxEntry.objects.filter(pk=entry.pk).update(status=OutboxStatus.DEAD, operation=OutboxOperation.DELETE)
    client.force_login(person)
    assert client.post(f"/inventory/sync-failures/{entry.pk}/resolve/", {"reason": "x"}).status_code == 403
    entry.refresh_from_db()
    assert entry.status == OutboxStatus.DEAD


def test_an_update_that_would_recreate_after_an_unanswered_attempt_asks_a_person(
    unlisted_connection,
    person,
    monkeypatch,  # noqa: F811
):
    """An IdP answering 404 for a vanished client: the update recreates it. If that recreate's answer is lost,
    the retry must not recreate a second time."""
    from inventory.connectors import NotFound, PushResult
    from tests.inventory.test_delivery import ScriptedConnector

    class Unlisted(ScriptedConnector):
        can_list = False

    fake = Unlisted(update=NotFound("404"), create=Transient("read timed out", reached_idp=True))
    monkeypatch.setattr(push, "connector_for", lambda idp, timeout=None: fake)
    client = register_agent(idp=unlisted_connection, owner=person)
    fake.script["create"] = PushResult(client_id="first-id", remote_state={"registration_access_token": "t"})
    assert deliver_client_outbox(client.pk) is True
    fake.script["create"] = Transient("read timed out", reached_idp=True)
    outbox_enqueue(client=client, operation=OutboxOperation.UPDATE)

    deliver_client_outbox(client.pk)  # PUT → 404 → create, whose answer is lost
    lease_runs_out(client)
    deliver_client_outbox(client.pk)  # PUT → 404 again: the earlier create may exist

    update = entries(client)[1]
    assert update.status == OutboxStatus.DEAD and update.last_error.startswith("Unconfirmed:")
    assert [name for name, _ in fake.calls].count("create") == 2  # the first create, and the one recreate
