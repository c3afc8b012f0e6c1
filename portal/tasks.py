"""The kernel's periodic task: a heartbeat per worker queue (beat schedule in portal/celery.py)."""

from __future__ import annotations

import time

from celery import shared_task

from portal.heartbeats import QUEUE_PREFIX, heartbeat_record


@shared_task(bind=True, name="portal.tasks.heartbeat", ignore_result=True, soft_time_limit=10, time_limit=20)
def heartbeat(self, queue: str) -> None:
    """Beat sends this to ``queue``; whichever worker consumes it records the queue as alive, with how long the
    message waited (from the ``registrar_sent_at`` header ``portal.celery`` stamps on every message)."""
    from portal.celery import message_header

    sent_at = message_header(self.request, "registrar_sent_at")
    delay = max(0.0, time.time() - float(sent_at)) if isinstance(sent_at, int | float) else None
    heartbeat_record(name=f"{QUEUE_PREFIX}{queue}", delay_seconds=delay, host=self.request.hostname or None)
