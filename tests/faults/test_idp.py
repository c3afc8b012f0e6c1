"""The IdP slow, down, or answering 5xx under load (issue 23, items 1 and 2), on the test IdP behind a fault proxy.

Each test measures the same load without a fault first, then with the fault, then lifts it. It asserts: agents
get 201 or 202 and people 200 throughout (no 5xx at all: an IdP fault has no documented 503); every client an
agent was told about ends up active at the IdP exactly once, and the IdP holds nothing else of the load; and,
while the IdP is slow, people's pages keep their p95 within twice the no-fault one (issue 23 asks for 500 ms;
an absolute time is the machine's, so the test compares with the same load a few seconds earlier, and prints
both) and the intake keeps at least half its no-fault rate (the adaptive inline wait opens its circuit; the API and the pages are separate pools).

The server's inline budget is 500 ms (tests/faults/harness.py, FAULT_ENV) and the slow IdP answers after 2 s:
the shape of issue 23's probe (budget 2 s, IdP 3 s), scaled to fit the suite's time.
"""

from __future__ import annotations

import math
import time

import pytest

from tests.faults.conftest import FAULT
from tests.faults.harness import Load, assert_all_at_idp_once, assert_clean_answers
from tests.races.harness import Call, bearer
from tests.races.support import body

pytestmark = FAULT

BASELINE_SECONDS = 5.0
FAULT_SECONDS = 8.0
SLOW_IDP_SECONDS = 2.0


def run_fault(
    fault_server, world, fault: str, *, baseline: float = BASELINE_SECONDS, **how
) -> tuple[Load, dict[str, float]]:
    """The load through a no-fault phase (``baseline`` seconds), the fault, and a short recovery; the phases'
    figures."""
    owner = world.owner()
    _, rat = world.token(owner, max_uses=100_000)
    approver = world.person(world.user("approver"))
    page = Call("GET", "/approvals/", cookies={"sessionid": approver.session_key})

    def register(name: str) -> Call:
        return Call("POST", "/oauth2/register", json=body(name), headers=bearer(rat))

    proxy = fault_server.proxy
    try:
        with Load(fault_server, agent_call=register, person_call=page, agents=4, people=2) as load:
            load.wait_for(lambda o: o.kind == "agent" and o.status in (201, 202), after=0, timeout=60)
            load.wait_for(lambda o: o.kind == "person", after=0, timeout=60)
            start = time.monotonic()
            time.sleep(baseline)
            proxy.set(fault, **how)
            fault_at = time.monotonic()
            time.sleep(FAULT_SECONDS)
            proxy.set("pass")
            lifted_at = time.monotonic()
            time.sleep(1.0)
    finally:
        proxy.set("pass")
    figures = {
        "intake_baseline": load.intake_rate(start, fault_at) if baseline else math.nan,
        "intake_fault": load.intake_rate(fault_at, lifted_at),
        "p95_baseline": load.person_p95(start, fault_at),
        "p95_fault": load.person_p95(fault_at, lifted_at),
        "idp_calls_in_fault": proxy.calls[fault],
    }
    return load, figures


def test_idp_slow(fault_server, world):
    load, figures = run_fault(fault_server, world, "slow", delay=SLOW_IDP_SECONDS)
    print(f"idp slow: {figures}")
    assert figures["idp_calls_in_fault"] > 0, "the fault was never seen"
    assert_clean_answers(load, fault_server)
    # People do not wait behind agents: their p95 stays within twice the no-fault one (bench/faults.py's goal; a
    # ratio, so the assertion holds on any machine; issue 23 saw 20 ms become 3.8-7.8 s). 50 ms of slack for a
    # baseline of a few milliseconds.
    assert figures["p95_fault"] <= 2 * figures["p95_baseline"] + 0.05, figures
    assert figures["intake_fault"] >= 0.5 * figures["intake_baseline"], figures
    assert_all_at_idp_once(load, fault_server)


@pytest.mark.parametrize(("fault", "how"), [("down", {}), ("error", {"status": 500})])
def test_idp_down_or_failing(fault_server, world, fault, how):
    load, figures = run_fault(fault_server, world, fault, baseline=0.0, **how)  # no ratio to compare
    print(f"idp {fault} {how}: {figures}")
    assert_clean_answers(load, fault_server)
    if fault == "error":
        assert figures["idp_calls_in_fault"] > 0, "the fault was never seen"
    agents_in_fault = [o for o in load.outcomes if o.kind == "agent" and o.status == 202]
    assert agents_in_fault, "no registration waited for a worker: the fault was never seen"
    assert_all_at_idp_once(load, fault_server)
