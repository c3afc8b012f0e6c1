"""Celery tasks of the shared kernel: the audit log's sequencer."""

from __future__ import annotations

import logging

from celery import shared_task

from portal.tlog.sequencer import log_seal

logger = logging.getLogger(__name__)
# Well inside CELERY_TASK_SOFT_TIME_LIMIT: a long backlog (an upgrade sealing the old chain) is worked off by
# successive runs, one second apart.
RUN_BUDGET_SECONDS = 20.0


@shared_task(name="portal.tasks.log_sequence", ignore_result=True)
def log_sequence() -> int:
    """Seal waiting audit events (beat every second, and nudged after commits). One runs at a time; the
    others return at once."""
    report = log_seal(time_budget=RUN_BUDGET_SECONDS)
    return report.sealed
