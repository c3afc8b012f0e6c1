"""Celery tasks for the sweeps and reminders (names match ``portal.celery`` beat schedule).

Thin: each task calls one sweep and returns its counts. Locking is the sweep's job (SKIP LOCKED), so
beat firing twice or two workers picking the same task is harmless. Each records a ``sweep:<name>`` heartbeat
with its duration when it finishes (``/metrics``: last run and duration per sweep).
"""

from __future__ import annotations

from celery import shared_task

from inventory import notifications, sweeps
from portal.heartbeats import SWEEP_PREFIX, heartbeat_timed

# Generous limits: a sweep commits per batch, so a killed run loses at most one batch's work.
_LIMITS = {"soft_time_limit": 240, "time_limit": 300, "ignore_result": True}


@shared_task(name="inventory.tasks.sweep_expired", **_LIMITS)
def sweep_expired() -> dict:
    with heartbeat_timed(SWEEP_PREFIX + "expired"):
        return sweeps.sweep_expired().counts


@shared_task(name="inventory.tasks.sweep_orphans", **_LIMITS)
def sweep_orphans() -> dict:
    with heartbeat_timed(SWEEP_PREFIX + "orphans"):
        return sweeps.sweep_orphans().counts


@shared_task(name="inventory.tasks.sweep_stale", **_LIMITS)
def sweep_stale() -> dict:
    with heartbeat_timed(SWEEP_PREFIX + "stale"):
        return sweeps.sweep_stale().counts


@shared_task(name="inventory.tasks.notify_expiring", **_LIMITS)
def notify_expiring() -> int:
    with heartbeat_timed(SWEEP_PREFIX + "notify_expiring"):
        return notifications.notify_expiring()
