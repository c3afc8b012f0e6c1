"""Outbox delivery (inventory.outbox) against the real oidc-provider, plus error paths with fakes."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.db import connection as db_connection
from django.utils import timezone

from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.connectors import AlreadyExists, NotFound, Transient, build_connector
from inventory.connectors.base import BaseConnector, ClientSpec, PushResult, RemoteClient
from inventory.connectors.rfc7591 import Rfc7591Connector
from inventory.lifecycle import client_transition
from inventory.models import Client, OutboxEntry
from inventory.outbox import OutboxError, outbox_enqueue, outbox_retry, push
from inventory.outbox.batch import deliver_outbox_batch
from inventory.outbox.config import CLAIM_CHUNK
from inventory.outbox.deliver import deliver_client_outbox, deliver_client_outbox_inline
from inventory.outbox.leases import due_client_ids
from inventory.outbox.push import client_spec
from inventory.outbox.record import backoff_seconds
from portal.audit import Actor, events_for
from tests.factories import UserFactory
from tests.provisioning import markers_at_idp, real_idp, register_agent  # noqa: F401

pytestmark = pytest.mark.django_db

OWNER = Actor.system("test-owner")


@pytest.fixture
def person(db):
    return UserFactory(username="olivia-owner", roles=["owner"])


def entries(client: Client) -> list[OutboxEntry]:
    return list(OutboxEntry.objects.filter(client=client).order_by("id"))


def make_due(client: Client) -> None:
    OutboxEntry.objects.filter(client=client, status=OutboxStatus.PENDING).update(next_attempt_at=timezone.now())


# -- the happy path against the real IdP --------------------------------------------------------------------


def test_create_activates_the_client_and_stores_its_idp_id(real_idp, oidc_idp, person):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person, scopes=["tickets:read", "docs:read"])

    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    assert client.activated_at is not None and client.last_synced_at is not None
    assert client.idp_client_id
    assert client.idp_state["registration_access_token"]
    assert client.idp_state["registration_client_uri"].endswith(client.idp_client_id)
    [entry] = entries(client)
    assert (entry.status, entry.attempts, entry.claimed_by, entry.claimed_until) == (OutboxStatus.DONE, 1, "", None)
    assert markers_at_idp(oidc_idp)[client.registration_id] == 1
    # The registration access token is encrypted at rest, never in the clear in the row.
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT CAST(idp_state AS TEXT) FROM inventory_client WHERE id = %s", [client.pk])
        raw = cursor.fetchone()[0]
    assert client.idp_state["registration_access_token"] not in raw
    assert [e.action for e in events_for("client", client.registration_id)] == ["client.create", "client.active"]


def test_update_stores_the_rotated_registration_access_token(real_idp, oidc_idp, person):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person, scopes=["tickets:read", "docs:read"])
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    first_token = client.idp_state["registration_access_token"]

    Client.objects.filter(pk=client.pk).update(scopes=["tickets:read"])
    outbox_enqueue(client=client, operation=OutboxOperation.UPDATE)
    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert client.idp_state["registration_access_token"] != first_token
    connector = push.connector_for(real_idp)
    assert connector.get(client.idp_client_id, client.idp_state).scopes == ["tickets:read"]
    # and again: each rotation is stored, so the client stays manageable
    outbox_enqueue(client=client, operation=OutboxOperation.UPDATE)
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    assert connector.get(client.idp_client_id, client.idp_state).client_id == client.idp_client_id


def test_retire_deletes_the_client_at_the_idp(real_idp, oidc_idp, person):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    deliver_client_outbox(client.pk)
    client.refresh_from_db()

    client_transition(client=client, target=ClientState.RETIRED, actor=OWNER, reason="done")
    assert deliver_client_outbox(client.pk) is True

    client.refresh_from_db()
    assert client.idp_disabled_at is not None
    assert client.idp_state == {"deleted": True}
    assert markers_at_idp(oidc_idp)[client.registration_id] == 0
    assert [e.status for e in entries(client)] == [OutboxStatus.DONE, OutboxStatus.DONE]
    assert "client.idp_delete" in [e.action for e in events_for("client", client.registration_id)]


def test_a_client_retired_before_delivery_is_never_created(real_idp, oidc_idp, person):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    client_transition(client=client, target=ClientState.RETIRED, actor=OWNER, reason="changed my mind")

    deliver_client_outbox(client.pk)

    assert [(e.operation, e.status) for e in entries(client)] == [
        (OutboxOperation.CREATE, OutboxStatus.SUPERSEDED),
        (OutboxOperation.DELETE, OutboxStatus.DONE),
    ]
    assert markers_at_idp(oidc_idp)[client.registration_id] == 0


def test_a_retried_create_adopts_what_a_crashed_attempt_left_and_removes_duplicates(
    real_idp,
    oidc_idp,
    person,  # noqa: F811
):
    client = register_agent(idp=real_idp, owner=person)
    # Two earlier attempts reached the IdP but their workers died before storing the answer.
    connector = push.connector_for(real_idp)
    spec = client_spec(client)
    orphans = sorted(connector.create(spec).client_id for _ in range(2))
    OutboxEntry.objects.filter(client=client).update(attempts=2)

    deliver_client_outbox(client.pk)

    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    assert client.idp_client_id == orphans[0]
    assert markers_at_idp(oidc_idp)[client.registration_id] == 1
    assert "client.idp_create_adopted" in [e.action for e in events_for("client", client.registration_id)]
    # An adopted client has no RFC 7592 token, but it can still be retired (admin delete).
    client_transition(client=client, target=ClientState.RETIRED, actor=OWNER)
    deliver_client_outbox(client.pk)
    assert markers_at_idp(oidc_idp)[client.registration_id] == 0


def test_inline_delivery_reports_activation(real_idp, person):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    assert deliver_client_outbox_inline(client.pk, timeout=2.0) is True


def test_inline_delivery_on_an_unreachable_idp_leaves_the_entry_for_a_worker(real_idp, person):  # noqa: F811
    real_idp.config = {**real_idp.config, "registration_endpoint": "http://127.0.0.1:9/reg"}
    real_idp.save()
    client = register_agent(idp=real_idp, owner=person)

    # A budget wide enough that the refused connection, not the budget, ends the attempt on a loaded machine.
    assert deliver_client_outbox_inline(client.pk, timeout=10.0) is False

    client.refresh_from_db()
    [entry] = entries(client)
    assert client.state == ClientState.PROVISIONING
    assert entry.status == OutboxStatus.PENDING and entry.attempts == 1
    assert entry.next_attempt_at > timezone.now()
    assert "ConnectError" in entry.last_error


# -- error paths (HTTP faked at the transport, or a scripted connector) ---------------------------------------


def rfc7591_with(handler, idp_connection):
    def build(idp, *, timeout=None):
        return build_connector(idp.kind, idp.config, idp.secrets, 5.0, transport=httpx.MockTransport(handler))

    return build


def test_a_5xx_is_retried_with_backoff_until_the_bound_then_dead_lettered(
    real_idp,
    person,
    monkeypatch,
    settings,  # noqa: F811
):
    settings.REGISTRAR_OUTBOX_MAX_ATTEMPTS = 3
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(503, json={"error": "server_error"})

    monkeypatch.setattr(push, "connector_for", rfc7591_with(handler, real_idp))
    client = register_agent(idp=real_idp, owner=person)

    before = timezone.now()
    assert deliver_client_outbox(client.pk) is False
    [entry] = entries(client)
    assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 1)
    # first retry: base 5 s with jitter in [2.5, 5]
    assert before + timedelta(seconds=2.4) <= entry.next_attempt_at <= timezone.now() + timedelta(seconds=5.1)
    assert "status=503" in entry.last_error
    # not due yet: nothing is sent
    deliver_client_outbox(client.pk)
    assert len(seen) == 1

    make_due(client)
    deliver_client_outbox(client.pk)
    [entry] = entries(client)
    assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 2)
    assert entry.next_attempt_at >= timezone.now() + timedelta(seconds=4.9)  # second retry: [5, 10]

    make_due(client)
    assert deliver_client_outbox(client.pk) is True  # nothing pending any more: it is dead
    [entry] = entries(client)
    client.refresh_from_db()
    assert (entry.status, entry.attempts) == (OutboxStatus.DEAD, 3)
    assert client.sync_failed is True and client.state == ClientState.PROVISIONING
    # after a failed attempt, a create first looks for a client an earlier attempt may have made
    assert seen == [("POST", "/reg"), ("GET", "/admin/clients"), ("GET", "/admin/clients")]
    dead = [e for e in events_for("client", client.registration_id) if e.action == "outbox.dead_lettered"]
    assert len(dead) == 1 and dead[0].after["attempts"] == 3


def test_a_400_is_dead_lettered_at_once_without_leaking_the_token(real_idp, person, monkeypatch):  # noqa: F811
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].split()[1]
        return httpx.Response(400, json={"error": "invalid_client_metadata", "error_description": f"bad {token}"})

    monkeypatch.setattr(push, "connector_for", rfc7591_with(handler, real_idp))
    client = register_agent(idp=real_idp, owner=person)

    deliver_client_outbox(client.pk)

    [entry] = entries(client)
    client.refresh_from_db()
    assert (entry.status, entry.attempts) == (OutboxStatus.DEAD, 1)
    assert "invalid_client_metadata" in entry.last_error
    assert real_idp.secrets["initial_access_token"] not in entry.last_error
    assert client.sync_failed is True


class ScriptedConnector(BaseConnector):
    """A connector whose answers a test scripts; records every call."""

    kind = "scripted"

    def __init__(self, **script: Any) -> None:
        super().__init__(config={}, secrets={})
        self.script = script
        self.calls: list[tuple[str, str | None]] = []

    def _answer(self, name: str, default: Any) -> Any:
        answer = self.script.get(name, default)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def create(self, spec: ClientSpec) -> PushResult:
        self.calls.append(("create", spec.registrar_id))
        return self._answer("create", PushResult(client_id="new-id", remote_state={"t": "1"}))

    def get(self, client_id: str, remote_state: Mapping[str, Any]) -> RemoteClient:
        raise NotImplementedError

    def update(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        self.calls.append(("update", client_id))
        return self._answer("update", PushResult(client_id=client_id, remote_state={"t": "2"}))

    def disable(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        self.calls.append(("disable", client_id))
        return self._answer("disable", PushResult(client_id=client_id))

    def delete(self, client_id: str, remote_state: Mapping[str, Any]) -> None:
        self.calls.append(("delete", client_id))
        self._answer("delete", None)

    def list(self) -> Iterator[RemoteClient]:
        self.calls.append(("list", None))
        return iter(self._answer("list", []))

    issuer = "https://scripted.test"
    token_endpoint = "https://scripted.test/token"


def use(monkeypatch, connector: ScriptedConnector) -> ScriptedConnector:
    monkeypatch.setattr(push, "connector_for", lambda idp, timeout=None: connector)
    return connector


def test_already_exists_adopts_the_client_carrying_our_marker(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    remote = RemoteClient(
        client_id="existing-id", registrar_id=client.registration_id, enabled=True, scopes=["tickets:read"], metadata={}
    )
    stranger = RemoteClient(client_id="other", registrar_id="reg_other", enabled=True, scopes=[], metadata={})
    fake = use(monkeypatch, ScriptedConnector(create=AlreadyExists("409"), list=[stranger, remote]))

    deliver_client_outbox(client.pk)

    client.refresh_from_db()
    assert (client.state, client.idp_client_id) == (ClientState.ACTIVE, "existing-id")
    assert client.idp_state == {"adopted": True}
    assert fake.calls == [("create", client.registration_id), ("list", None)]


def test_already_exists_naming_the_client_id_needs_no_listing(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    fake = use(monkeypatch, ScriptedConnector(create=AlreadyExists("409", client_id="kc-id")))
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    assert client.idp_client_id == "kc-id" and fake.calls == [("create", client.registration_id)]


def test_already_exists_without_a_match_is_dead_lettered(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    use(monkeypatch, ScriptedConnector(create=AlreadyExists("409"), list=[]))
    deliver_client_outbox(client.pk)
    assert entries(client)[0].status == OutboxStatus.DEAD


def test_not_found_on_delete_counts_as_done(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    use(monkeypatch, ScriptedConnector(delete=NotFound("gone")))
    deliver_client_outbox(client.pk)
    client_transition(client=client, target=ClientState.REVOKED, actor=OWNER)

    deliver_client_outbox(client.pk)

    client.refresh_from_db()
    assert [e.status for e in entries(client)] == [OutboxStatus.DONE, OutboxStatus.DONE]
    assert client.idp_disabled_at is not None and client.sync_failed is False


def test_not_found_on_update_recreates_the_client(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    fake = use(monkeypatch, ScriptedConnector(update=NotFound("gone")))
    deliver_client_outbox(client.pk)
    fake.script["create"] = PushResult(client_id="recreated-id", remote_state={"t": "3"})
    outbox_enqueue(client=client, operation=OutboxOperation.UPDATE)

    deliver_client_outbox(client.pk)

    client.refresh_from_db()
    assert client.idp_client_id == "recreated-id" and client.idp_state == {"t": "3"}
    assert [c[0] for c in fake.calls] == ["create", "update", "create"]


def test_not_found_on_disable_counts_as_done(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    use(monkeypatch, ScriptedConnector(disable=NotFound("gone")))
    deliver_client_outbox(client.pk)
    client_transition(client=client, target=ClientState.EXPIRED, actor=Actor.system("sweep"))
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    assert [e.status for e in entries(client)] == [OutboxStatus.DONE, OutboxStatus.DONE]
    assert client.idp_disabled_at is not None


def test_entries_are_delivered_in_order_and_a_retry_blocks_later_ones(real_idp, person, monkeypatch):  # noqa: F811
    from inventory.connectors import Transient

    fake = use(monkeypatch, ScriptedConnector(create=Transient("down")))
    client2 = register_agent(idp=real_idp, owner=person, name="second")
    outbox_enqueue(client=client2, operation=OutboxOperation.UPDATE)

    deliver_client_outbox(client2.pk)

    assert [(e.operation, e.status) for e in entries(client2)] == [
        (OutboxOperation.CREATE, OutboxStatus.PENDING),
        (OutboxOperation.UPDATE, OutboxStatus.PENDING),
    ]
    assert entries(client2)[1].attempts == 0
    assert fake.calls == [("create", client2.registration_id)]


def test_a_leased_entry_is_left_alone_until_its_lease_runs_out(real_idp, person, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    fake = use(monkeypatch, ScriptedConnector())
    OutboxEntry.objects.filter(client=client).update(
        claimed_by="other-worker", claimed_until=timezone.now() + timedelta(seconds=60), attempts=1
    )
    assert deliver_client_outbox(client.pk) is False
    assert fake.calls == []
    assert due_client_ids() == []

    OutboxEntry.objects.filter(client=client).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert due_client_ids() == [client.pk]
    deliver_client_outbox(client.pk)
    # the dead worker may have reached the IdP: look for our marker before creating
    assert fake.calls == [("list", None), ("create", client.registration_id)]
    assert entries(client)[0].status == OutboxStatus.DONE and entries(client)[0].attempts == 2


def test_a_slow_idp_never_lets_a_lease_run_out_under_a_call(real_idp, person, monkeypatch, settings, caplog):  # noqa: F811
    """Entries leased together wait for each other's calls: one is only pushed while its lease still has
    room for the longest delivery (two connector timeouts + margin); the rest go back unattempted."""
    settings.REGISTRAR_OUTBOX_PARALLEL_CALLS = 1  # the scripted IdP reads the lease from the database
    settings.REGISTRAR_OUTBOX_LEASE_SECONDS = 30
    settings.REGISTRAR_CONNECTOR_TIMEOUT_SECONDS = 5  # budget: 2 x 5 s + 2 s = 12 s
    clients = [register_agent(idp=real_idp, owner=person, name=f"slow-{n}") for n in range(5)]
    real_now, offset, call_seconds = timezone.now, [timedelta(0)], [10]
    monkeypatch.setattr(timezone, "now", lambda: real_now() + offset[0])
    leases_at_call: list[float] = []

    class SlowIdP(ScriptedConnector):
        def create(self, spec):
            self.calls.append(("create", spec.registrar_id))
            entry = OutboxEntry.objects.get(client__registration_id=spec.registrar_id)
            leases_at_call.append((entry.claimed_until - timezone.now()).total_seconds())
            offset[0] += timedelta(seconds=call_seconds[0])  # each call takes 10 s
            return PushResult(client_id=f"slow-{spec.registrar_id}", remote_state={})

    fake = use(monkeypatch, SlowIdP())
    with caplog.at_level("WARNING", logger="inventory.outbox"):
        counts = deliver_outbox_batch([c.pk for c in clients])

    assert len(fake.calls) == 2 and all(left >= 12 for left in leases_at_call)  # 30 s, then 20 s left
    assert counts == {"delivered": 2, "other": 0, "skipped": 3}
    rows = OutboxEntry.objects.filter(client__in=clients).order_by("client_id")
    assert [r.status for r in rows] == [OutboxStatus.DONE] * 2 + [OutboxStatus.PENDING] * 3
    # given back as if never claimed: no attempt counted, so no needless marker lookup next time
    assert [(r.attempts, r.claimed_by, r.claimed_until) for r in rows[2:]] == [(0, "", None)] * 3
    assert "outbox_claims_returned entries=3 released=3" in caplog.text
    call_seconds[0] = 0  # the IdP recovers; the next requeue finishes them
    deliver_outbox_batch([c.pk for c in clients])
    assert Client.objects.filter(pk__in=[c.pk for c in clients], state=ClientState.ACTIVE).count() == 5
    assert ("list", None) not in fake.calls


class InFlight(ScriptedConnector):
    """Counts IdP calls running at the same time; each takes a little while, like a network round trip."""

    def __init__(self, fail_for: str = "") -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.fail_for = fail_for
        self.threads: set[str] = set()

    def create(self, spec: ClientSpec) -> PushResult:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.calls.append(("create", spec.registrar_id))
            self.threads.add(threading.current_thread().name)
        try:
            import time

            time.sleep(0.05)
            if spec.registrar_id == self.fail_for:
                raise Transient("503 from a busy IdP")
            return PushResult(client_id=f"id-{spec.registrar_id}", remote_state={"registration_access_token": "t"})
        finally:
            with self.lock:
                self.running -= 1


def test_a_worker_keeps_several_idp_calls_in_flight_and_records_each_once(
    real_idp,
    person,
    monkeypatch,
    settings,  # noqa: F811
):
    settings.REGISTRAR_OUTBOX_PARALLEL_CALLS = 4
    clients = [register_agent(idp=real_idp, owner=person, name=f"inflight-{n}") for n in range(12)]
    fake = use(monkeypatch, InFlight(fail_for=clients[5].registration_id))

    counts = deliver_outbox_batch([c.pk for c in clients])

    assert fake.most == 4 and all(name.startswith("outbox-call") for name in fake.threads)
    assert sorted(registrar_id for _, registrar_id in fake.calls) == sorted(c.registration_id for c in clients)
    assert counts == {"delivered": 11, "other": 1, "skipped": 0}
    rows = {c.name: (c.state, c.idp_client_id) for c in Client.objects.filter(pk__in=[c.pk for c in clients])}
    assert rows.pop("inflight-5") == (ClientState.PROVISIONING, None)  # its transient failure is retried later
    assert all(
        state == (ClientState.ACTIVE, f"id-{c.registration_id}")
        for c in clients
        if c.name in rows
        for state in [rows[c.name]]
    )
    failed = entries(clients[5])[0]
    assert (failed.status, failed.attempts, failed.claimed_by) == (OutboxStatus.PENDING, 1, "")
    assert "503 from a busy IdP" in failed.last_error
    # one audit trail per client, recorded by the calling thread
    assert all(
        [e.action for e in events_for("client", c.registration_id)] == ["client.create", "client.active"]
        for c in clients
        if c.name != "inflight-5"
    )


def test_an_idp_call_on_the_pool_may_not_touch_the_database(real_idp, person, monkeypatch, settings):  # noqa: F811
    settings.REGISTRAR_OUTBOX_PARALLEL_CALLS = 2
    client = register_agent(idp=real_idp, owner=person, name="sneaky")

    class Sneaky(ScriptedConnector):
        def create(self, spec):
            Client.objects.count()  # would run outside the worker's transaction, on a connection of its own
            return super().create(spec)

    use(monkeypatch, Sneaky())
    deliver_outbox_batch([client.pk])

    entry = entries(client)[0]
    assert entry.status == OutboxStatus.DEAD and "touched the database" in entry.last_error
    client.refresh_from_db()
    assert client.sync_failed and client.state == ClientState.PROVISIONING


def test_backoff_is_exponential_bounded_and_jittered(settings):
    settings.REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS = 5
    settings.REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS = 60
    rng = random.Random(7)
    for attempts, full in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (12, 60)]:
        delays = {backoff_seconds(attempts, rng=rng) for _ in range(20)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1
    assert backoff_seconds(1, retry_after=30, rng=rng) == 30
    assert backoff_seconds(1, retry_after=3600, rng=rng) == 60


# -- requeue and retry -------------------------------------------------------------------------------------


def test_requeue_enqueues_each_client_with_due_work_once(real_idp, person, monkeypatch):  # noqa: F811
    from inventory import tasks

    sent: list[list[int]] = []
    monkeypatch.setattr(tasks.deliver_outbox_batch, "delay", sent.append)
    a = register_agent(idp=real_idp, owner=person, name="a")
    b = register_agent(idp=real_idp, owner=person, name="b")
    c = register_agent(idp=real_idp, owner=person, name="c")
    outbox_enqueue(client=a, operation=OutboxOperation.UPDATE)
    OutboxEntry.objects.filter(client=b).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    OutboxEntry.objects.filter(client=c).update(status=OutboxStatus.DEAD)

    assert tasks.requeue_outbox() == 1
    assert tasks.requeue_outbox() == 1
    assert sent == [[a.pk], [a.pk]]


def test_requeue_splits_the_due_clients_into_even_batches(real_idp, person, monkeypatch, settings):  # noqa: F811
    from inventory import tasks

    settings.REGISTRAR_OUTBOX_BATCH_SIZE = 4
    sent: list[list[int]] = []
    monkeypatch.setattr(tasks.deliver_outbox_batch, "delay", sent.append)
    clients = [register_agent(idp=real_idp, owner=person, name=f"even-{n}") for n in range(10)]

    assert tasks.requeue_outbox() == 10
    assert [len(batch) for batch in sent] == [3, 4, 3]  # not 4 + 4 + 2
    assert sorted(pk for batch in sent for pk in batch) == sorted(c.pk for c in clients)


@pytest.mark.parametrize(
    ("count", "size", "lengths"),
    [
        (0, 100, []),
        (1, 100, [1]),
        (100, 100, [100]),
        (101, 100, [50, 51]),
        (120, 100, [60, 60]),
        (250, 100, [83, 84, 83]),
        (7, 1, [1] * 7),
    ],
)
def test_even_batches(count, size, lengths):
    from inventory.tasks import even_batches

    batches = even_batches(list(range(count)), size)
    assert [len(b) for b in batches] == lengths
    assert [x for b in batches for x in b] == list(range(count))  # every item once, in order


def test_outbox_retry_revives_a_dead_entry(real_idp, person, admin_user, monkeypatch):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    OutboxEntry.objects.filter(client=client).update(status=OutboxStatus.DEAD, attempts=8, last_error="x")
    Client.objects.filter(pk=client.pk).update(sync_failed=True)
    entry = entries(client)[0]

    outbox_retry(entry=entry, actor=Actor.user(admin_user))

    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 0)
    assert entry.next_attempt_at <= timezone.now()
    assert events_for("client", client.registration_id).filter(action="outbox.retry").count() == 1
    use(monkeypatch, ScriptedConnector())
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    assert client.sync_failed is False and client.state == ClientState.ACTIVE

    with pytest.raises(OutboxError, match="not dead"):
        outbox_retry(entry=entry, actor=Actor.user(admin_user))
    entry.refresh_from_db()
    assert entry.status == OutboxStatus.DONE


def test_retrying_a_dead_create_of_an_ended_client_supersedes_it(real_idp, person, admin_user):  # noqa: F811
    client = register_agent(idp=real_idp, owner=person)
    OutboxEntry.objects.filter(client=client).update(status=OutboxStatus.DEAD)
    Client.objects.filter(pk=client.pk).update(sync_failed=True)
    client_transition(client=client, target=ClientState.RETIRED, actor=OWNER)

    outbox_retry(entry=entries(client)[0], actor=Actor.user(admin_user))

    client.refresh_from_db()
    assert entries(client)[0].status == OutboxStatus.SUPERSEDED
    assert client.sync_failed is False


# -- concurrency ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_never_push_the_same_entry_twice(oidc_idp, monkeypatch):
    from django.db import connections

    from tests.provisioning import connection_for

    idp = connection_for(oidc_idp, name="race-idp")
    owner = UserFactory(username="racer")
    clients = [register_agent(idp=idp, owner=owner, name=f"race-{i}") for i in range(15)]
    for client in clients:
        outbox_enqueue(client=client, operation=OutboxOperation.UPDATE, deliver_after_commit=False)

    creates: list[str] = []
    real_create = Rfc7591Connector.create

    def counting_create(self, spec):
        creates.append(spec.registrar_id)
        return real_create(self, spec)

    monkeypatch.setattr(Rfc7591Connector, "create", counting_create)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(order: list[Client]) -> None:
        try:
            barrier.wait()
            for client in order:
                deliver_client_outbox(client.pk)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(clients,)), threading.Thread(target=worker, args=(clients[::-1],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    # Stragglers (an entry one thread found leased by the other) are finished by a later pass.
    for client in clients:
        deliver_client_outbox(client.pk)
    markers = markers_at_idp(oidc_idp)
    assert sorted(creates) == sorted(c.registration_id for c in clients)
    assert all(markers[c.registration_id] == 1 for c in clients)
    done = OutboxEntry.objects.filter(client__in=clients)
    assert set(done.values_list("status", flat=True)) == {OutboxStatus.DONE}
    assert set(done.values_list("attempts", flat=True)) == {1}
    assert set(Client.objects.filter(pk__in=[c.pk for c in clients]).values_list("state", flat=True)) == {
        ClientState.ACTIVE
    }


# -- the workers' batch path ------------------------------------------------------------------------------


def test_a_batch_delivers_many_clients_and_records_them_together(real_idp, oidc_idp, person):  # noqa: F811
    plain = [register_agent(idp=real_idp, owner=person, name=f"plain-{n}") for n in range(3)]
    retired = register_agent(idp=real_idp, owner=person, name="retired")
    client_transition(client=retired, target=ClientState.RETIRED, actor=OWNER)
    busy = register_agent(idp=real_idp, owner=person, name="busy")
    outbox_enqueue(client=busy, operation=OutboxOperation.UPDATE)
    later = register_agent(idp=real_idp, owner=person, name="later")
    OutboxEntry.objects.filter(client=later).update(next_attempt_at=timezone.now() + timedelta(minutes=5))

    counts = deliver_outbox_batch([c.pk for c in [*plain, retired, busy, later]])

    for client in [*plain, busy]:
        client.refresh_from_db()
        assert client.state == ClientState.ACTIVE and client.idp_client_id, client.name
        assert client.idp_state["registration_access_token"]
        assert [e.action for e in events_for("client", client.registration_id)][:2] == [
            "client.create",
            "client.active",
        ]
        assert markers_at_idp(oidc_idp)[client.registration_id] == 1
        assert set(OutboxEntry.objects.filter(client=client).values_list("status", flat=True)) == {OutboxStatus.DONE}
    assert [(e.operation, e.status) for e in entries(retired)] == [
        (OutboxOperation.CREATE, OutboxStatus.SUPERSEDED),
        (OutboxOperation.DELETE, OutboxStatus.DONE),
    ]
    assert entries(later)[0].status == OutboxStatus.PENDING and entries(later)[0].attempts == 0
    assert counts["skipped"] == 0 and counts["delivered"] >= 4
    # the registration access token is stored encrypted by the bulk update too
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT CAST(idp_state AS TEXT) FROM inventory_client WHERE id = %s", [plain[0].pk])
        raw = cursor.fetchone()[0]
    plain[0].refresh_from_db()
    assert plain[0].idp_state["registration_access_token"] not in raw


class FailingFor(ScriptedConnector):
    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing

    def create(self, spec: ClientSpec) -> PushResult:
        self.calls.append(("create", spec.registrar_id))
        if spec.registrar_id == self.failing:
            raise Transient("503")
        return PushResult(client_id=f"id-{spec.registrar_id}", remote_state={"t": "1"})


def test_a_failure_in_a_batch_only_delays_that_client(real_idp, person, monkeypatch):  # noqa: F811
    clients = [register_agent(idp=real_idp, owner=person, name=f"b{n}") for n in range(4)]
    use(monkeypatch, FailingFor(clients[1].registration_id))

    deliver_outbox_batch([c.pk for c in clients])

    states = {c.name: (c.state, c.idp_client_id) for c in Client.objects.filter(pk__in=[c.pk for c in clients])}
    assert states["b1"] == (ClientState.PROVISIONING, None)
    assert all(states[f"b{n}"] == (ClientState.ACTIVE, f"id-{clients[n].registration_id}") for n in (0, 2, 3))
    failed = entries(clients[1])[0]
    assert (failed.status, failed.attempts, failed.claimed_by) == (OutboxStatus.PENDING, 1, "")
    assert failed.next_attempt_at > timezone.now()


def test_a_batch_records_a_client_retired_during_its_create_without_activating_it(
    real_idp,
    person,
    monkeypatch,
    settings,  # noqa: F811
):
    settings.REGISTRAR_OUTBOX_PARALLEL_CALLS = 1  # the retirement happens inside the (inline) IdP call
    client = register_agent(idp=real_idp, owner=person)

    class RetiresMeanwhile(ScriptedConnector):
        def create(self, spec):
            client_transition(client=Client.objects.get(pk=client.pk), target=ClientState.RETIRED, actor=OWNER)
            return PushResult(client_id="made-anyway", remote_state={"t": "1"})

    fake = use(monkeypatch, RetiresMeanwhile())

    deliver_outbox_batch([client.pk])

    client.refresh_from_db()
    assert (client.state, client.idp_client_id) == (ClientState.RETIRED, "made-anyway")
    # the DELETE queued meanwhile is nudged to a worker by its own commit (or found by the requeue)
    assert [(e.operation, e.status) for e in entries(client)] == [
        (OutboxOperation.CREATE, OutboxStatus.DONE),
        (OutboxOperation.DELETE, OutboxStatus.PENDING),
    ]
    assert "client.idp_create" in [e.action for e in events_for("client", client.registration_id)]
    deliver_outbox_batch([client.pk])
    assert entries(client)[1].status == OutboxStatus.DONE
    assert ("delete", "made-anyway") in fake.calls


def test_batch_queries_do_not_grow_with_the_clients_in_a_claim_chunk(real_idp, person, monkeypatch):  # noqa: F811
    from django.test.utils import CaptureQueriesContext

    use(monkeypatch, ScriptedConnector())

    def run(n: int) -> int:
        clients = [register_agent(idp=real_idp, owner=person, name=f"q{n}-{i}") for i in range(n)]
        # ScriptedConnector answers the same id for everyone; give each its own
        counter = iter(range(10_000))
        monkeypatch.setattr(
            ScriptedConnector,
            "create",
            lambda self, spec: PushResult(client_id=f"c{n}-{next(counter)}", remote_state={}),
        )
        with CaptureQueriesContext(db_connection) as ctx:
            deliver_outbox_batch([c.pk for c in clients])
        assert Client.objects.filter(pk__in=[c.pk for c in clients], state=ClientState.ACTIVE).count() == n
        return len(ctx.captured_queries)

    # heads read once, one claim UPDATE per chunk of CLAIM_CHUNK, the bulk writes once per flush
    small, large = run(5), run(CLAIM_CHUNK)
    assert large == small
    assert run(CLAIM_CHUNK + 1) == small + 1  # a second chunk: one more claim


@pytest.mark.django_db(transaction=True)
def test_two_workers_with_overlapping_batches_never_push_an_entry_twice(oidc_idp, monkeypatch):
    from django.db import connections

    from tests.provisioning import connection_for

    idp = connection_for(oidc_idp, name="batch-race-idp")
    owner = UserFactory(username="batch-racer")
    clients = [register_agent(idp=idp, owner=owner, name=f"batch-race-{i}") for i in range(20)]
    creates: list[str] = []
    real_create = Rfc7591Connector.create

    def counting_create(self, spec):
        creates.append(spec.registrar_id)
        return real_create(self, spec)

    monkeypatch.setattr(Rfc7591Connector, "create", counting_create)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(ids: list[int]) -> None:
        try:
            barrier.wait()
            deliver_outbox_batch(ids)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    ids = [c.pk for c in clients]
    threads = [threading.Thread(target=worker, args=(ids,)), threading.Thread(target=worker, args=(ids[::-1],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    deliver_outbox_batch(ids)  # anything one thread skipped because the other held it
    assert sorted(creates) == sorted(c.registration_id for c in clients)
    markers = markers_at_idp(oidc_idp)
    assert all(markers[c.registration_id] == 1 for c in clients)
    assert set(OutboxEntry.objects.filter(client__in=clients).values_list("attempts", flat=True)) == {1}
    assert Client.objects.filter(pk__in=ids, state=ClientState.ACTIVE).count() == 20
