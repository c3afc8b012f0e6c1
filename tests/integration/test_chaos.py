"""Reliability under failure: real Celery workers, a real IdP, and things going wrong on purpose.

240 clients are registered (20 of them retired before any delivery) and delivered by two real
``celery -A portal worker`` processes over a private, non-persistent ``redis-server``. While they work:

1. one worker is killed with SIGKILL while it holds a delivery lease (mid-delivery);
2. the IdP is frozen (SIGSTOP) for 3 s, so requests time out, then resumed;
3. the IdP connection points at a closed port for 3 s (connections refused), then back;
4. Redis is killed with SIGKILL and restarted empty (every queued message lost);
5. the killed worker is restarted; 20 active clients are retired and 10 expired meanwhile.

Only the periodic ``requeue_outbox`` (sent here every second instead of by beat) brings lost work back.
The retry limit is the production default (``REGISTRAR_OUTBOX_MAX_ATTEMPTS``); only the backoff is shortened.

Run twice: against the IdP with its admin listing, and against the same IdP as a plain RFC 7591/7592 server
without one (``IDP_LISTING=off``).

- With the listing: afterwards every live client exists exactly once at the IdP, every retired/expired one
  is gone, nothing is dead-lettered, and reconciliation finds nothing to report.
- Without it, a create whose answer the kill or the freeze swallowed cannot be looked up. At no point does
  the IdP hold two clients for one registration; such creates are dead-lettered as ``Unconfirmed`` (and
  nothing else is), each with at most one client at the IdP. Then the person the sync-failures page asks
  for does what it says — deletes that client in the IdP's console and retries the create, or marks the
  delete of an ended client resolved — and the end state is the same as with the listing.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.lifecycle import client_transition
from inventory.models import Client, OutboxEntry
from inventory.outbox import outbox_resolve, outbox_retry
from inventory.outbox.deliver import deliver_client_outbox
from inventory.reconcile import reconcile_connection
from portal.audit import Actor
from tests.agents import Agent
from tests.factories import UserFactory
from tests.idp_server import IdPProcess
from tests.provisioning import connection_for, console_delete, idp_clients, markers_at_idp, register_agent
from tests.workers import CeleryWorker, RedisServer, database_url, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CLIENTS = 240
RETIRED_BEFORE = 20
RETIRED_AFTER = 20
EXPIRED_AFTER = 10
DEADLINE_S = 75


def pending() -> int:
    return OutboxEntry.objects.filter(status=OutboxStatus.PENDING).count()


def delivered() -> int:
    return OutboxEntry.objects.filter(status=OutboxStatus.DONE).count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("listing", [True, False], ids=["with-listing", "without-listing"])
def test_every_change_survives_killed_workers_idp_outages_and_lost_messages(listing):
    broker = RedisServer().start()
    sender = Celery("chaos-sender", broker=broker.url)
    env = worker_env(
        database=database_url(connection.settings_dict),
        redis_url=broker.url,
        encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
        REGISTRAR_OUTBOX_LEASE_SECONDS="6",
        REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS="0.3",
        REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS="2",
        REGISTRAR_CONNECTOR_TIMEOUT_SECONDS="1.5",
    )
    env.pop("REGISTRAR_OUTBOX_MAX_ATTEMPTS", None)  # the production default, whatever the caller's environment
    workers = {name: CeleryWorker(name, env=env, concurrency=4) for name in ("chaos-a", "chaos-b")}
    with IdPProcess(listing=listing) as idp_process:
        idp = connection_for(idp_process, name="chaos-idp")
        good_config = dict(idp.config)
        owner = UserFactory(username="chaos-owner", roles=["owner"])
        agent = Agent()  # one key for all: the IdP only needs a valid JWKS
        clients = [register_agent(idp=idp, owner=owner, agent=agent, name=f"chaos-{n}") for n in range(CLIENTS)]
        system = Actor.system("chaos")
        for client in clients[:RETIRED_BEFORE]:
            client_transition(client=client, target=ClientState.RETIRED, actor=system, reason="never needed")

        try:
            for worker in workers.values():
                worker.start()
            sender.send_task("inventory.tasks.requeue_outbox")

            # 1. SIGKILL worker A while it holds a lease (it is mid-delivery).
            a_pids = workers["chaos-a"].pids()

            def a_holds_a_lease():
                leases = OutboxEntry.objects.filter(
                    status=OutboxStatus.PENDING, claimed_until__gt=timezone.now()
                ).values_list("claimed_by", flat=True)
                return any(int(lease.split(":")[1]) in a_pids for lease in leases if lease.count(":") >= 2)

            wait_for(
                lambda: delivered() >= 10 and a_holds_a_lease(), timeout=30, what="worker A mid-delivery", interval=0.01
            )
            workers["chaos-a"].kill9()
            killed_at_done = delivered()

            # 2. The IdP stops answering (requests time out), then comes back.
            os.kill(idp_process._process.pid, signal.SIGSTOP)
            time.sleep(3)
            os.kill(idp_process._process.pid, signal.SIGCONT)

            # 3. Connections refused for a while, then the right address again.
            idp.config = {**good_config, "registration_endpoint": "http://127.0.0.1:9/reg"}
            if listing:
                idp.config["list_endpoint"] = "http://127.0.0.1:9/admin/clients"
            idp.save(update_fields=["config"])
            time.sleep(3)
            idp.config = good_config
            idp.save(update_fields=["config"])

            # 4. Redis dies and comes back empty: every queued message is lost; workers reconnect.
            broker.kill9()
            time.sleep(1)
            broker.start()
            sender = Celery("chaos-sender-2", broker=broker.url)
            assert redis.Redis.from_url(broker.url).dbsize() == 0

            # 5. Restart the killed worker; owners keep working meanwhile.
            workers["chaos-a"] = CeleryWorker("chaos-a2", env=env, concurrency=4).start()
            live = clients[RETIRED_BEFORE:]
            requeued = [0.0]

            def active_with_periodic_requeue() -> bool:
                # What beat's requeue-outbox does every 15 s in production: one requeue sent before worker A's
                # leases had expired found nothing to send, and nothing else brought that work back (seen on SQLite).
                if time.monotonic() - requeued[0] >= 5:
                    sender.send_task("inventory.tasks.requeue_outbox")
                    requeued[0] = time.monotonic()
                return (
                    Client.objects.filter(
                        pk__in=[c.pk for c in live[: RETIRED_AFTER + EXPIRED_AFTER]], state=ClientState.ACTIVE
                    ).count()
                    == RETIRED_AFTER + EXPIRED_AFTER
                )

            wait_for(
                active_with_periodic_requeue,
                timeout=40,
                what="clients to retire/expire to become active",
                interval=0.5,
            )
            for client in live[:RETIRED_AFTER]:
                client_transition(client=client, target=ClientState.RETIRED, actor=system, reason="done")
            for client in live[RETIRED_AFTER : RETIRED_AFTER + EXPIRED_AFTER]:
                client_transition(client=client, target=ClientState.EXPIRED, actor=system, reason="ttl")

            # The periodic requeue is all that brings lost and abandoned work back.
            deadline = time.monotonic() + DEADLINE_S
            while pending() and time.monotonic() < deadline:
                sender.send_task("inventory.tasks.requeue_outbox")
                time.sleep(1)
            assert pending() == 0, f"{pending()} entries still pending; worker log: {workers['chaos-b'].log_tail()}"
        finally:
            for worker in workers.values():
                worker.stop()
            broker.stop()

        assert killed_at_done < CLIENTS  # the kill really happened mid-run
        retried = OutboxEntry.objects.filter(attempts__gt=1).count()
        assert retried > 0  # the outages were felt
        assert max(markers_at_idp(idp_process).values(), default=0) <= 1  # never two clients for one registration
        if not listing:
            settle_unconfirmed_as_a_person(idp_process, idp, [c.pk for c in clients])
        assert not OutboxEntry.objects.filter(status=OutboxStatus.DEAD).exists()

        markers = markers_at_idp(idp_process)
        ended_ids = {c.pk for c in clients[:RETIRED_BEFORE] + live[: RETIRED_AFTER + EXPIRED_AFTER]}
        for client in Client.objects.filter(pk__in=[c.pk for c in clients]):
            if client.pk in ended_ids:
                assert client.state in (ClientState.RETIRED, ClientState.EXPIRED)
                assert markers[client.registration_id] == 0, client.registration_id
            else:
                assert client.state == ClientState.ACTIVE, client.registration_id
                assert markers[client.registration_id] == 1, client.registration_id
        at_idp = {c["client_id"]: c.get("registrar_id") for c in idp_clients(idp_process)}
        assert sum(markers.values()) == len(at_idp) == CLIENTS - len(ended_ids)
        for client in Client.objects.filter(pk__in=[c.pk for c in clients], state=ClientState.ACTIVE):
            assert at_idp[client.idp_client_id] == client.registration_id

        if listing:
            report = reconcile_connection(idp=idp)
            assert report.is_empty, report.lines()
            assert report.remote_total == CLIENTS - len(ended_ids)


def settle_unconfirmed_as_a_person(idp_process: IdPProcess, idp, client_ids: list[int]) -> None:
    """What the sync-failures page asks an admin to do about each dead entry on an IdP without a listing.

    Only ``Unconfirmed`` failures may be there — creates whose answer was lost, and deletes of clients whose id
    Registrar never learnt — each with at most one client at the IdP. The admin deletes that client in the
    IdP's console, then retries the create or marks the delete resolved; delivery finishes the rest.
    """
    dead = list(
        OutboxEntry.objects.filter(status=OutboxStatus.DEAD, client_id__in=client_ids)
        .select_related("client")
        .order_by("id")
    )
    assert all(entry.last_error.startswith("Unconfirmed:") for entry in dead), [e.last_error for e in dead]
    by_marker: dict[str, list[str]] = {}
    for remote in idp_clients(idp_process):
        by_marker.setdefault(remote.get("registrar_id"), []).append(remote["client_id"])
    admin = UserFactory(username="chaos-admin", roles=["admin"], is_staff=True)
    person = Actor.user(admin)
    for entry in dead:
        client = entry.client
        for client_id in by_marker.pop(client.registration_id, []):
            if client_id != client.idp_client_id:
                console_delete(idp_process, client_id)
        if entry.operation in (OutboxOperation.DELETE, OutboxOperation.DISABLE):
            outbox_resolve(entry=entry, actor=person, reason="checked the IdP console; removed what was there")
        else:
            outbox_retry(entry=entry, actor=person)
    for client_id in {entry.client_id for entry in dead}:
        deliver_client_outbox(client_id)
