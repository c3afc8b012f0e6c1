"""The adaptive inline wait's parts (portal.circuit): the per-IdP circuit, the bulkhead, the total deadline."""

from __future__ import annotations

import threading

import pytest

from portal.circuit import CLOSED, HALF_OPEN, OPEN, Bulkhead, Circuit, Deadline, inline_wait


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def circuit(clock):
    return Circuit(budget=2.0, alpha=0.5, window=10, failure_ratio=0.5, min_samples=4, open_seconds=10, clock=clock)


def test_a_fast_idp_keeps_the_circuit_closed(circuit):
    for _ in range(50):
        assert circuit.acquire("idp") == CLOSED
        circuit.record("idp", seconds=0.1, ok=True)
    assert circuit.state("idp") == CLOSED
    assert circuit.ewma("idp") == pytest.approx(0.1)


def test_an_idp_slower_than_the_budget_opens_the_circuit_after_min_samples(circuit):
    for i in range(3):
        circuit.record("slow", seconds=3.0, ok=True)
        assert circuit.state("slow") == CLOSED, i  # not on too little evidence
    circuit.record("slow", seconds=3.0, ok=True)
    assert circuit.state("slow") == OPEN
    assert circuit.acquire("slow") is None  # nobody waits: 202 at once
    assert circuit.state("fast") == CLOSED  # one circuit per IdP


def test_failures_open_it_even_when_they_are_fast(circuit):
    for ok in (True, False, True, False):
        circuit.record("flaky", seconds=0.05, ok=ok)
    assert circuit.state("flaky") == OPEN


def test_one_slow_call_among_fast_ones_does_not_open_it(circuit):
    for _ in range(6):
        circuit.record("idp", seconds=0.1, ok=True)
    circuit.record("idp", seconds=2.5, ok=True)
    for _ in range(3):
        circuit.record("idp", seconds=0.1, ok=True)
    assert circuit.state("idp") == CLOSED


def _open(circuit, key="idp"):
    for _ in range(4):
        circuit.record(key, seconds=5.0, ok=False)
    assert circuit.state(key) == OPEN


def test_half_open_lets_exactly_one_probe_through_after_the_open_period(circuit, clock):
    _open(circuit)
    clock.now += 9.9
    assert circuit.acquire("idp") is None
    clock.now += 0.2
    assert circuit.acquire("idp") == HALF_OPEN
    assert circuit.acquire("idp") is None  # the others still get 202 while the probe is out
    circuit.record("idp", seconds=0.2, ok=True, ticket=HALF_OPEN)
    assert circuit.state("idp") == CLOSED
    assert circuit.acquire("idp") == CLOSED
    circuit.record("idp", seconds=3.0, ok=False)  # a fresh window: one failure does not reopen it
    assert circuit.state("idp") == CLOSED


def test_a_failed_or_slow_probe_opens_it_for_another_period(circuit, clock):
    _open(circuit)
    clock.now += 10
    assert circuit.acquire("idp") == HALF_OPEN
    circuit.record("idp", seconds=2.5, ok=True, ticket=HALF_OPEN)  # succeeded, but slower than the budget
    assert circuit.state("idp") == OPEN
    clock.now += 5
    assert circuit.acquire("idp") is None
    clock.now += 5
    assert circuit.acquire("idp") == HALF_OPEN


def test_an_unused_probe_is_given_back(circuit, clock):
    _open(circuit)
    clock.now += 10
    assert circuit.acquire("idp") == HALF_OPEN
    circuit.release("idp", HALF_OPEN)
    assert circuit.acquire("idp") == HALF_OPEN


def test_the_deadline_is_a_total_not_per_attempt(clock):
    deadline = Deadline(2.0, clock=clock)
    clock.now += 1.5  # the first attempt
    assert deadline.remaining() == pytest.approx(0.5)  # the retry gets what is left, not another 2 s
    clock.now += 1.0
    assert deadline.remaining() == 0.0 and deadline.expired


def test_the_bulkhead_admits_at_most_k_at_once():
    bulkhead = Bulkhead(2)
    assert bulkhead.try_enter() and bulkhead.try_enter()
    assert not bulkhead.try_enter()
    bulkhead.leave()
    assert bulkhead.try_enter()


def test_inline_wait_beyond_k_waiters_answers_at_once_and_frees_its_slot(circuit):
    bulkhead = Bulkhead(1)
    with inline_wait(circuit, bulkhead, "idp", budget=2.0) as first:
        assert first is not None and first.deadline.remaining() == pytest.approx(2.0)
        with inline_wait(circuit, bulkhead, "idp", budget=2.0) as second:
            assert second is None
        first.record(seconds=0.1, ok=True)
    assert bulkhead.inside == 0
    with inline_wait(circuit, bulkhead, "idp", budget=2.0) as again:
        assert again is not None


def test_inline_wait_with_the_circuit_open_answers_at_once(circuit):
    _open(circuit)
    bulkhead = Bulkhead(4)
    with inline_wait(circuit, bulkhead, "idp", budget=2.0) as wait:
        assert wait is None
    assert bulkhead.inside == 0


def test_inline_wait_gives_back_an_unused_probe_and_the_slot_on_an_exception(circuit, clock):
    _open(circuit)
    clock.now += 10
    bulkhead = Bulkhead(1)
    with pytest.raises(RuntimeError), inline_wait(circuit, bulkhead, "idp", budget=2.0) as wait:
        assert wait.ticket == HALF_OPEN
        raise RuntimeError("the request failed before calling the IdP")
    assert bulkhead.inside == 0
    assert circuit.acquire("idp") == HALF_OPEN


def test_the_bulkhead_holds_under_threads():
    bulkhead = Bulkhead(3)
    inside, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(12)

    def worker():
        barrier.wait()
        for _ in range(200):
            if bulkhead.try_enter():
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                with lock:
                    inside[0] -= 1
                bulkhead.leave()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 3
    assert bulkhead.inside == 0
