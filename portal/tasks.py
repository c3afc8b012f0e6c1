"""Celery tasks of the shared kernel: a heartbeat per worker queue, and the audit log's sequencer (beat
schedule in portal/celery.py)."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from portal.heartbeats import QUEUE_PREFIX, heartbeat_record
from portal.tlog.sequencer import log_seal

logger = logging.getLogger(__name__)
# Well inside CELERY_TASK_SOFT_TIME_LIMIT: a long backlog (an upgrade sealing the old chain) is worked off by
# successive runs, one second apart.
RUN_BUDGET_SECONDS = 20.0


@shared_task(bind=True, name="portal.tasks.heartbeat", ignore_result=True, soft_time_limit=10, time_limit=20)
def heartbeat(self, queue: str) -> None:
    """Beat sends this to ``queue``; whichever worker consumes it records the queue as alive, with how long the
    message waited (from the ``registrar_sent_at`` header ``portal.celery`` stamps on every message)."""
    from portal.celery import message_header

    sent_at = message_header(self.request, "registrar_sent_at")
    delay = max(0.0, time.time() - float(sent_at)) if isinstance(sent_at, int | float) else None
    heartbeat_record(name=f"{QUEUE_PREFIX}{queue}", delay_seconds=delay, host=self.request.hostname or None)


@shared_task(name="portal.tasks.log_sequence", ignore_result=True)
def log_sequence() -> int:
    """Seal waiting audit events (beat every second, and nudged after commits). One runs at a time; the
    others return at once."""
    report = log_seal(time_budget=RUN_BUDGET_SECONDS)
    return report.sealed
