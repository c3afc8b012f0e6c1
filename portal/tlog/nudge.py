"""Nudge the sequencer after a commit that appended events, without ever making the request wait.

The request thread only sets an event; a daemon thread per process sends the Celery task, at most once per
``MIN_INTERVAL`` — so a burst of registrations costs one message, and a slow or absent broker delays the seal
(beat runs the sequencer every second anyway), never the request.
"""

from __future__ import annotations

import logging
import os
import threading

from portal.logs import log_event

logger = logging.getLogger(__name__)
MIN_INTERVAL = 0.25  # seconds between two nudges from one process
TASK = "portal.tasks.log_sequence"


class _Nudger:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def poke(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            with self._lock:  # (re)start after a fork: threads do not survive it
                if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                    self._wake = threading.Event()
                    self._pid = os.getpid()
                    self._thread = threading.Thread(target=self._run, name="audit-log-nudge", daemon=True)
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            send()
            threading.Event().wait(MIN_INTERVAL)


class _BrokerState:
    """This process's view of the broker as the nudges see it: one warning when it goes away, one when it is back
    (with how many nudges were lost), never a stack trace per nudge — during a Redis outage every commit of every
    web process nudges."""

    def __init__(self) -> None:
        self.failed = 0

    def failure(self, exc: BaseException) -> None:
        self.failed += 1
        if self.failed == 1:
            log_event(
                logger,
                "log_nudge_failed",
                level=logging.WARNING,
                task=TASK,
                error=f"{type(exc).__name__}: {exc}"[:300],
                effect="the sequencer runs from beat until the broker is back",
            )

    def success(self) -> None:
        if self.failed:
            log_event(logger, "log_nudge_recovered", level=logging.WARNING, task=TASK, nudges_lost=self.failed)
            self.failed = 0


_broker = _BrokerState()


def send() -> None:
    """Ask a worker to run the sequencer now (best effort: a failure only leaves it to beat)."""
    try:
        from portal.celery import app

        app.send_task(TASK, expires=10, retry=False)
    except Exception as exc:  # noqa: BLE001 - the broker being down must never surface here
        _broker.failure(exc)
    else:
        _broker.success()


_nudger = _Nudger()


def nudge_sequencer() -> None:
    _nudger.poke()
