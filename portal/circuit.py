"""Adaptive inline wait and a bulkhead, in the process (issue 23, items 1 and 2).

An agent's registration may wait a short budget for its IdP delivery (201 with credentials) instead of getting
202 and polling. Waiting is only worth it while the IdP answers within the budget, and only while the waiting
does not take every web worker from people. This module decides, per request, whether to wait:

* :class:`Circuit` tracks each IdP's recent deliveries (an EWMA of the latency and a window of the last
  outcomes) and trips **open** when the IdP is slower than the budget (EWMA above it) or failing (at least
  ``failure_ratio`` of the window), once it has ``min_samples``. While open, nobody waits: the answer is 202 at
  once and the outbox delivers in the background. After ``open_seconds`` one request is let through as a
  **half-open** probe; its outcome closes the circuit (a fast success) or opens it for another period.
* :class:`Bulkhead` caps how many requests of this process wait inline at once (``limit``); beyond it the
  answer is 202 at once, so agents can hold at most ``limit`` of a process's threads in the wait.
* :class:`Deadline` makes the budget a total for the request: every attempt and back-off inside the wait
  takes what is left, never a fresh budget per attempt.

:func:`inline_wait` combines the three. All state is per process (a gunicorn worker): nothing to share,
nothing that fails when Redis or the database does; each process learns within ``min_samples`` deliveries.
The clock is injectable for tests.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Deadline:
    """A total time budget: ``remaining()`` shrinks as time passes; never negative."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = max(0.0, seconds)
        self.ends = clock() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.ends - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


_current_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("inline_deadline", default=None)


@contextmanager
def within(deadline: Deadline) -> Iterator[Deadline]:
    """Every outbound call made inside the block gets at most what is left of ``deadline``
    (:func:`call_timeout`), so several attempts or requests share one budget."""
    token = _current_deadline.set(deadline)
    try:
        yield deadline
    finally:
        _current_deadline.reset(token)


def call_timeout(default: float) -> float:
    """The timeout for one outbound call: ``default``, or less when a :func:`within` deadline has less left."""
    deadline = _current_deadline.get()
    return default if deadline is None else min(default, deadline.remaining())


@dataclass
class _State:
    window: deque = field(default_factory=deque)  # recent outcomes: True = ok within budget
    ewma: float | None = None  # seconds
    samples: int = 0
    state: str = CLOSED
    opened_at: float = 0.0
    probing: bool = False


class Circuit:
    """Per-key (per IdP) latency and error tracker with an open/half-open/closed circuit; see the module doc."""

    def __init__(
        self,
        *,
        budget: float,
        alpha: float = 0.3,
        window: int = 20,
        failure_ratio: float = 0.5,
        min_samples: int = 5,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.budget = budget
        self.alpha = alpha
        self.window = window
        self.failure_ratio = failure_ratio
        self.min_samples = min_samples
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[Hashable, _State] = {}

    def _get(self, key: Hashable) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(window=deque(maxlen=self.window))
        return state

    def state(self, key: Hashable) -> str:
        with self._lock:
            return self._get(key).state

    def ewma(self, key: Hashable) -> float | None:
        with self._lock:
            return self._get(key).ewma

    def acquire(self, key: Hashable) -> str | None:
        """Whether a request may wait inline for ``key``: ``"closed"`` (yes), ``"half_open"`` (yes, as the one
        probe; report its outcome with :meth:`record`), or None (no: answer 202 at once)."""
        with self._lock:
            state = self._get(key)
            if state.state == CLOSED:
                return CLOSED
            if state.state == OPEN and self._clock() - state.opened_at >= self.open_seconds:
                state.state = HALF_OPEN
            if state.state == HALF_OPEN and not state.probing:
                state.probing = True
                return HALF_OPEN
            return None

    def release(self, key: Hashable, ticket: str | None) -> None:
        """Give back a half-open probe that was never made (the request ended before calling the IdP). A probe
        whose outcome was recorded has already moved the circuit out of half-open: then this does nothing."""
        if ticket != HALF_OPEN:
            return
        with self._lock:
            state = self._get(key)
            if state.state == HALF_OPEN and state.probing:
                state.probing = False

    def reset(self) -> None:
        """Forget every IdP (tests)."""
        with self._lock:
            self._states.clear()

    def record(
        self, key: Hashable, *, seconds: float, ok: bool, ticket: str | None = CLOSED, budget: float | None = None
    ) -> None:
        """One delivery's outcome: how long it took, and whether it succeeded (a timeout is ``ok=False``).
        ``budget``: the request's own, when it differs from the circuit's default."""
        budget = self.budget if budget is None else budget
        good = ok and seconds <= budget
        with self._lock:
            state = self._get(key)
            state.ewma = seconds if state.ewma is None else self.alpha * seconds + (1 - self.alpha) * state.ewma
            state.samples += 1
            state.window.append(good)
            if ticket == HALF_OPEN:
                state.probing = False
                if good:
                    self._close(state)
                else:
                    self._open(state)
                return
            if state.state == CLOSED and self._should_open(state):
                self._open(state)

    def _should_open(self, state: _State) -> bool:
        if len(state.window) < self.min_samples:
            return False
        failures = sum(1 for good in state.window if not good)
        return failures / len(state.window) >= self.failure_ratio or (state.ewma or 0.0) > self.budget

    def _open(self, state: _State) -> None:
        state.state, state.opened_at = OPEN, self._clock()

    def _close(self, state: _State) -> None:
        # A fresh start: the outcomes that opened the circuit say nothing about the IdP now.
        state.state, state.ewma, state.samples = CLOSED, None, 0
        state.window.clear()


class Bulkhead:
    """At most ``limit`` holders at once in this process; ``try_enter`` never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.inside = 0

    def try_enter(self) -> bool:
        with self._lock:
            if self.inside >= self.limit:
                return False
            self.inside += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.inside = max(0, self.inside - 1)


@dataclass
class Wait:
    """Permission to wait inline: the total ``deadline``; :meth:`record` each delivery attempt's outcome."""

    circuit: Circuit
    key: Hashable
    ticket: str
    deadline: Deadline
    recorded: bool = False

    def record(self, *, seconds: float, ok: bool) -> None:
        self.circuit.record(self.key, seconds=seconds, ok=ok, ticket=self.ticket)
        self.recorded = True


@contextmanager
def inline_wait(circuit: Circuit, bulkhead: Bulkhead, key: Hashable, *, budget: float) -> Iterator[Wait | None]:
    """``Wait`` when the request may wait inline for ``key`` within ``budget`` seconds in total, else None
    (answer 202 at once). The bulkhead slot and an unused half-open probe are given back on exit."""
    if budget <= 0 or not bulkhead.try_enter():
        yield None
        return
    try:
        ticket = circuit.acquire(key)
        if ticket is None:
            yield None
            return
        wait = Wait(circuit, key, ticket, Deadline(budget, clock=circuit._clock))
        try:
            yield wait
        finally:
            if not wait.recorded:
                circuit.release(key, ticket)
    finally:
        bulkhead.leave()
