"""The Celery worker killed -9 mid-delivery under load and started again, as ``Restart=always`` does (issue 23,
item 4): agents and people get no 5xx, the new worker consumes within 60 s, and every client an agent was told
about is active at the IdP exactly once (the dead worker's leased entries are taken over when their lease ends,
and a create that had reached the IdP is adopted by its marker, not made twice)."""

from __future__ import annotations

import time

from tests.faults.conftest import FAULT
from tests.faults.harness import Load, assert_all_at_idp_once, assert_clean_answers
from tests.races.harness import Call, bearer
from tests.races.support import body

pytestmark = FAULT


def leased_by(pids: set[int]) -> int:
    """Outbox entries whose lease is held by one of ``pids`` (``claimed_by`` is ``host:pid:nonce``)."""
    from django.db import connection
    from django.utils import timezone

    from inventory.models import OutboxEntry

    connection.close()
    holders = OutboxEntry.objects.filter(claimed_until__gt=timezone.now()).values_list("claimed_by", flat=True)
    return sum(1 for holder in holders if holder.count(":") >= 2 and int(holder.split(":")[1]) in pids)


def test_worker_killed_mid_delivery_and_restarted(fault_server, world):
    owner = world.owner()
    _, rat = world.token(owner, max_uses=100_000)
    approver = world.person(world.user("approver"))
    page = Call("GET", "/approvals/", cookies={"sessionid": approver.session_key})

    def register(name: str) -> Call:
        return Call("POST", "/oauth2/register", json=body(name), headers=bearer(rat))

    proxy = fault_server.proxy
    old = fault_server.celery
    try:
        # A slow IdP (1 s an answer) keeps the worker in the middle of deliveries when it is killed.
        proxy.set("slow", delay=1.0)
        with Load(fault_server, agent_call=register, person_call=page, agents=4, people=1) as load:
            load.wait_for(lambda o: o.kind == "agent" and o.status == 202, after=0, timeout=60)
            # What beat's requeue-outbox does every 15 s, until the worker holds leases (slow deliveries).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not leased_by(old.pids()):
                fault_server.nudge_outbox()
                time.sleep(0.5)
            pids = old.pids()  # the main process and its pool
            old.kill9()
            orphaned = leased_by(pids)
            proxy.set("pass")  # the fault under test is the worker's death, not the IdP
            time.sleep(3.0)  # registrations go on; their deliveries wait in the outbox
            restarted_at = time.monotonic()
            worker = fault_server.start_worker()
            while time.monotonic() < restarted_at + 60 and " received" not in worker.log_tail(10**7):
                time.sleep(0.2)
            consumed_after = time.monotonic() - restarted_at
            time.sleep(1.0)
    finally:
        proxy.set("pass")
    print(
        f"worker kill: {len(pids)} processes killed holding {orphaned} leases; consuming {consumed_after:.1f} s after"
    )
    assert orphaned, "the worker was killed between deliveries: the test did not test a takeover"
    assert " received" in worker.log_tail(10**7), f"the new worker did not consume within 60 s: {worker.log_tail()}"
    assert_clean_answers(load, fault_server)
    assert_all_at_idp_once(load, fault_server)
