"""Periodic approvals work (beat schedule in portal/celery.py). Tasks are thin: they call one function."""

from __future__ import annotations

import logging

from celery import shared_task

from portal.heartbeats import SWEEP_PREFIX, heartbeat_timed
from portal.logs import log_event

log = logging.getLogger(__name__)


@shared_task(name="approvals.tasks.sweep_lapsed")
def sweep_lapsed() -> int:
    """Lapse pending requests nobody decided within REGISTRAR_REQUEST_LAPSE_DAYS (``manage.py sweep lapsed``)."""
    from approvals.inventory_hooks import sweep_lapsed as sweep

    with heartbeat_timed(SWEEP_PREFIX + "lapsed"):
        count = sweep().counts["lapsed"]
    if count:
        log_event(log, "requests_lapsed", count=count)
    return count


@shared_task(name="approvals.tasks.notify_approvers")
def notify_approvers() -> int:
    """Batched mail to approvers who have new requests waiting (at most one per approver per interval)."""
    from approvals import notifications

    return notifications.notify_approvers()


@shared_task(name="approvals.tasks.purge_statement_uses")
def purge_statement_uses() -> int:
    """Forget the jti of software statements that have expired (they can no longer be replayed)."""
    from approvals.statements import statement_uses_purge

    count = statement_uses_purge()
    if count:
        log_event(log, "statement_uses_purged", count=count)
    return count


@shared_task(name="approvals.tasks.fold_unauthorized")
def fold_unauthorized() -> int:
    """Fold the closed minutes of refused-credential tallies into audit events (one per source and minute)."""
    from approvals.unauthorized import unauthorized_fold

    return unauthorized_fold()


@shared_task(name="approvals.tasks.check_cimd_pins")
def check_cimd_pins() -> dict[str, int]:
    """Re-fetch the pinned Client ID Metadata Documents that are due (``manage.py sweep cimd_drift``)."""
    from approvals.cimd.pinning import pins_check_due

    with heartbeat_timed(SWEEP_PREFIX + "cimd_drift"):
        counts = pins_check_due()
    if counts:
        log_event(log, "cimd_pins_checked", counts=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return counts
