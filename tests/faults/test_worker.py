"""The Celery worker killed -9 mid-delivery under load and started again, as ``Restart=always`` does (issue 23,
item 4): agents and people get no 5xx, the new worker consumes within 60 s, and every client an agent was told
about is active at the IdP exactly once (the dead worker's leased entries are taken over when their lease ends,
and a create that had reached the IdP is adopted by its marker, not made twice)."""

from __future__ import annotations

import time

from tests.faults.conftest import FAULT
from tests.faults.harness import Load, assert_all_at_idp_once, assert_clean_answers, heartbeat_seen
from tests.races.harness import Call, bearer
from tests.races.support import body

pytestmark = FAULT


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
            time.sleep(3.0)
            in_flight = len(old.pids())
            old.kill9()
            proxy.set("pass")  # the fault under test is the worker's death, not the IdP
            time.sleep(3.0)  # registrations go on; their deliveries wait in the outbox
            worker = fault_server.start_worker()
            restarted_at = time.monotonic()
            fault_server.send_tasks("portal.tasks.heartbeat", 1, args=["faults-after-worker-kill"])
            while time.monotonic() < restarted_at + 60 and not heartbeat_seen("faults-after-worker-kill"):
                time.sleep(0.5)
            consumed_after = time.monotonic() - restarted_at
            time.sleep(1.0)
    finally:
        proxy.set("pass")
    print(f"worker kill: consuming {consumed_after:.1f} s after the restart; pool of {in_flight} processes killed")
    assert heartbeat_seen("faults-after-worker-kill"), f"the new worker did not consume: {worker.log_tail()}"
    assert_clean_answers(load, fault_server)
    assert_all_at_idp_once(load, fault_server)
