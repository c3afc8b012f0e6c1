"""Celery tasks of the inventory: outbox delivery, its periodic requeue, reconciliation, the sweeps and reminders.

Task names are ``inventory.tasks.<function>``, as the beat schedule in ``portal.celery`` names them. Tasks are
thin: they take primary keys and call ``inventory.outbox`` / ``inventory.reconcile`` / ``inventory.sweeps``.
Retries are *not* Celery retries: a failed delivery records its own ``next_attempt_at`` (backoff with
jitter) and ``requeue_outbox`` (beat, every 15 s) enqueues whatever is due, so a lost broker message or a
killed worker delays a change but never loses it. Soft and hard time limits come from settings
(``CELERY_TASK_SOFT_TIME_LIMIT`` / ``CELERY_TASK_TIME_LIMIT``) and are tightened per task below.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from inventory import notifications, sweeps
from inventory.outbox import batch, deliver, leases, push
from portal.heartbeats import SWEEP_PREFIX, heartbeat_timed
from portal.logs import log_event

logger = logging.getLogger(__name__)

# One per worker process: connectors keep their HTTP connections (and TLS contexts) between tasks.
_connectors = push.ConnectorCache()


@shared_task(name="inventory.tasks.deliver_client_outbox", ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_client_outbox(client_id: int) -> bool:
    """Deliver one client's due outbox entries (in order). Safe to run twice at once."""
    try:
        return deliver.deliver_client_outbox(client_id, connectors=_connectors)
    except SoftTimeLimitExceeded:
        # The lease on the entry runs out and requeue_outbox retries it; nothing to undo here.
        log_event(logger, "deliver_soft_time_limit", level=logging.WARNING, client_id=client_id)
        return False


@shared_task(name="inventory.tasks.deliver_outbox_batch", ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_outbox_batch(client_ids: list[int]) -> dict:
    """Deliver the due heads of many clients (bulk-recorded); what the periodic requeue hands out."""
    try:
        return batch.deliver_outbox_batch(client_ids, connectors=_connectors)
    except SoftTimeLimitExceeded:
        log_event(logger, "deliver_batch_soft_time_limit", level=logging.WARNING, clients=len(client_ids))
        return {}


def even_batches(items: list, size: int) -> list[list]:
    """``items`` in as few batches of at most ``size`` as possible, of (nearly) equal length: 120 items at
    size 100 make 60 + 60, not 100 + 20, so the workers sharing them finish together."""
    count = -(-len(items) // size)  # ceiling
    bounds = [round(i * len(items) / count) for i in range(count + 1)] if count else [0]
    return [items[bounds[i] : bounds[i + 1]] for i in range(count)]


@shared_task(name="inventory.tasks.requeue_outbox", ignore_result=True, soft_time_limit=30, time_limit=45)
def requeue_outbox(limit: int = 10_000) -> int:
    """Enqueue delivery of every client with a due, unleased entry, in batches. Idempotent."""
    client_ids = leases.due_client_ids(limit=limit)
    for client_batch in even_batches(client_ids, settings.REGISTRAR_OUTBOX_BATCH_SIZE):
        deliver_outbox_batch.delay(client_batch)
    if client_ids:
        log_event(logger, "outbox_requeued", clients=len(client_ids))
    return len(client_ids)


@shared_task(name="inventory.tasks.reconcile_idp", ignore_result=True, soft_time_limit=600, time_limit=660)
def reconcile_idp(idp_id: int) -> dict:
    from inventory.models import IdPConnection
    from inventory.reconcile import reconcile_connection

    idp = IdPConnection.objects.filter(pk=idp_id, enabled=True).first()
    if idp is None:
        return {}
    return reconcile_connection(idp=idp).summary()


@shared_task(name="inventory.tasks.reconcile_all", ignore_result=True, soft_time_limit=30, time_limit=45)
def reconcile_all() -> int:
    """Fan out one reconcile task per enabled IdP connection."""
    from inventory.models import IdPConnection

    ids = list(IdPConnection.objects.filter(enabled=True).values_list("pk", flat=True))
    for idp_id in ids:
        reconcile_idp.delay(idp_id)
    return len(ids)


@shared_task(name="inventory.tasks.pull_usage", ignore_result=True, soft_time_limit=240, time_limit=300)
def pull_usage() -> dict:
    """Read client usage from every enabled IdP connection that can report it (inventory.usage.usage_pull)."""
    from inventory.connectors import ConnectorError
    from inventory.models import IdPConnection
    from inventory.usage import usage_pull

    done: dict = {}
    for idp in IdPConnection.objects.filter(enabled=True).order_by("pk"):
        try:
            result = usage_pull(idp)
        except ConnectorError as exc:
            log_event(logger, "usage_pull_failed", level=logging.WARNING, idp=idp.name, error=str(exc)[:200])
            continue
        if result is not None:
            done[idp.name] = result.to_dict()
    return done


@shared_task(name="inventory.tasks.refresh_report_snapshots", ignore_result=True, soft_time_limit=120, time_limit=150)
def refresh_report_snapshots() -> list[str]:
    """Recompute the framework-report snapshot so no page view pays for its aggregate over live clients (four
    of its controls depend on more than the counted columns). The dashboard needs none: it reads the counts."""
    from inventory.reports.controls import framework_report
    from inventory.selectors import cached_report

    if settings.REGISTRAR_REPORT_CACHE_SECONDS <= 0:
        return []
    refreshed = []
    for key, compute in (("frameworks", framework_report),):
        cached_report(key, compute, refresh=True)
        refreshed.append(key)
    return refreshed


@shared_task(name="inventory.tasks.fold_counts", ignore_result=True, soft_time_limit=50, time_limit=60)
def fold_counts() -> int:
    """Fold the client and request count deltas into the rollups (inventory.counts); a second run at once returns 0."""
    from inventory.counts import counts_fold

    return counts_fold()


@shared_task(name="inventory.tasks.reconcile_counts", ignore_result=True, soft_time_limit=1800, time_limit=1900)
def reconcile_counts() -> int:
    """Nightly: recount the rollups from the clients and repair any drift (one audit event if there was)."""
    from inventory.counts import counts_reconcile

    with heartbeat_timed(SWEEP_PREFIX + "reconcile_counts"):
        return counts_reconcile(repair=True).keys


# -- sweeps and reminders ----------------------------------------------------------------------------------
# Each calls one sweep and returns its counts. Locking is the sweep's job (SKIP LOCKED), so beat firing twice or
# two workers picking the same task is harmless. Each records a ``sweep:<name>`` heartbeat with its duration when
# it finishes (``/metrics``: last run and duration per sweep). Generous limits: a sweep commits per batch, so a
# killed run loses at most one batch's work.

_SWEEP_LIMITS = {"soft_time_limit": 240, "time_limit": 300, "ignore_result": True}


@shared_task(name="inventory.tasks.sweep_expired", **_SWEEP_LIMITS)
def sweep_expired() -> dict:
    with heartbeat_timed(SWEEP_PREFIX + "expired"):
        return sweeps.sweep_expired().counts


@shared_task(name="inventory.tasks.sweep_orphans", **_SWEEP_LIMITS)
def sweep_orphans() -> dict:
    with heartbeat_timed(SWEEP_PREFIX + "orphans"):
        return sweeps.sweep_orphans().counts


@shared_task(name="inventory.tasks.notify_expiring", **_SWEEP_LIMITS)
def notify_expiring() -> int:
    with heartbeat_timed(SWEEP_PREFIX + "notify_expiring"):
        return notifications.notify_expiring()


@shared_task(name="inventory.tasks.lifecycle_policies", soft_time_limit=540, time_limit=600, ignore_result=True)
def lifecycle_policies() -> dict:
    """The lifecycle policies' pass (hourly): flag and resolve compliance issues, act on those past grace.
    Issues are taken with SKIP LOCKED and each acted on once, so beat firing twice is harmless."""
    from inventory.lifecycle_policies import run_lifecycle_policies

    with heartbeat_timed(SWEEP_PREFIX + "lifecycle_policies"):
        return run_lifecycle_policies()
