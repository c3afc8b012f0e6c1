"""Celery task for the lifecycle policies' periodic pass (beat: ``portal.celery``, hourly).

Registered from ``InventoryConfig.ready()``. Locking is the pass's own (issues taken with SKIP LOCKED, each
acted on once), so beat firing twice is harmless.
"""

from __future__ import annotations

from celery import shared_task

from portal.heartbeats import SWEEP_PREFIX, heartbeat_timed


@shared_task(name="inventory.tasks.lifecycle_policies", soft_time_limit=540, time_limit=600, ignore_result=True)
def lifecycle_policies() -> dict:
    from inventory.lifecycle_policies import run_lifecycle_policies

    with heartbeat_timed(SWEEP_PREFIX + "lifecycle_policies"):
        return run_lifecycle_policies()
