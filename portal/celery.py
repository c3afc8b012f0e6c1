"""The Celery application and the beat schedule (task names as strings: portal imports no app)."""

from __future__ import annotations

import os
import time

from celery import Celery, signals
from celery.schedules import crontab

from portal.logs import log_event

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("registrar")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # The audit log's sequencer (portal.tlog.sequencer): nudged after commits too; a run that finds another one
    # busy returns at once, and a run still queued after a few seconds is pointless (the next one is due).
    "log-sequence": {"task": "portal.tasks.log_sequence", "schedule": 1.0, "options": {"expires": 5}},
    "requeue-outbox": {"task": "inventory.tasks.requeue_outbox", "schedule": 15.0},
    "sweep-expired": {"task": "inventory.tasks.sweep_expired", "schedule": 60.0},
    "sweep-orphans": {"task": "inventory.tasks.sweep_orphans", "schedule": crontab(minute=7)},
    "lifecycle-policies": {"task": "inventory.tasks.lifecycle_policies", "schedule": crontab(minute=23)},
    "notify-expiring": {"task": "inventory.tasks.notify_expiring", "schedule": crontab(minute=41)},
    "reconcile-idp": {"task": "inventory.tasks.reconcile_all", "schedule": crontab(minute="*/30")},
    "pull-usage": {"task": "inventory.tasks.pull_usage", "schedule": 300.0},
    # Twice per REGISTRAR_REPORT_CACHE_SECONDS (default 60 s), so the framework report's snapshot never expires
    # while beat runs (the dashboards read the counts and need no snapshot).
    "refresh-report-snapshots": {"task": "inventory.tasks.refresh_report_snapshots", "schedule": 30.0},
    # Client and request counts (inventory.counts): fold the deltas every few seconds (readers add the unfolded ones, so
    # this bounds the deltas table, not the freshness); recount and repair any drift nightly.
    "fold-counts": {"task": "inventory.tasks.fold_counts", "schedule": 5.0, "options": {"expires": 30}},
    "reconcile-counts": {"task": "inventory.tasks.reconcile_counts", "schedule": crontab(hour=2, minute=41)},
    "sweep-lapsed": {"task": "approvals.tasks.sweep_lapsed", "schedule": crontab(minute="*/10")},
    "notify-approvers": {"task": "approvals.tasks.notify_approvers", "schedule": 60.0},
    "purge-statement-uses": {"task": "approvals.tasks.purge_statement_uses", "schedule": crontab(minute=23)},
    "fold-unauthorized": {"task": "approvals.tasks.fold_unauthorized", "schedule": 60.0},
    # Each pin is due at its document's cache lifetime (clamped to REGISTRAR_CIMD_CACHE_MIN/MAX_SECONDS).
    "check-cimd-pins": {"task": "approvals.tasks.check_cimd_pins", "schedule": 60.0},
}


@app.on_after_configure.connect
def _schedule_heartbeats(sender, **_kwargs) -> None:
    """One heartbeat per worker queue (REGISTRAR_HEARTBEAT_QUEUES), dropped unconsumed after one interval.

    Added once the configuration is loaded (not at import): the interval and queues are settings.
    """
    from django.conf import settings

    interval = float(settings.REGISTRAR_HEARTBEAT_SECONDS)
    for queue in settings.REGISTRAR_HEARTBEAT_QUEUES:
        sender.add_periodic_task(
            interval,
            sender.signature("portal.tasks.heartbeat", args=(queue,)),
            name=f"heartbeat-{queue}",
            queue=queue,
            expires=interval,
        )


# --- logging, ids and metrics in worker and beat processes -------------------------------------------------


@signals.setup_logging.connect
def _configure_logging(**_kwargs) -> None:
    """Workers and beat log through Django's LOGGING (portal.logs), not Celery's own format; Python warnings
    become log lines too (``--quiet`` in the units drops the start-up banner, the one other thing printed)."""
    import logging
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
    logging.captureWarnings(True)


@signals.before_task_publish.connect
def _stamp_message(headers=None, **_kwargs) -> None:
    """Every message carries the request that enqueued it (for the worker's log lines) and when it was sent."""
    if headers is None:
        return
    from portal.logs import current_request_id

    request_id = current_request_id()
    if request_id:
        headers.setdefault("registrar_request_id", request_id)
    headers.setdefault("registrar_sent_at", time.time())


def message_header(request, name: str):
    """A custom header of the running task's message: a request attribute from a worker, in ``headers`` when
    applied in-process."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


@signals.task_prerun.connect
def _bind_task_ids(task_id=None, task=None, **_kwargs) -> None:
    from portal.logs import bind_task

    if task is None:
        return
    origin = message_header(task.request, "registrar_request_id")
    task.request.registrar_log_tokens = bind_task(task_id or "", origin if isinstance(origin, str) else "")


@signals.task_postrun.connect
def _unbind_task_ids(task=None, **_kwargs) -> None:
    from portal.logs import unbind_task

    tokens = getattr(task.request, "registrar_log_tokens", None) if task is not None else None
    if tokens is not None:
        task.request.registrar_log_tokens = None
        unbind_task(tokens)


@signals.worker_init.connect
def _serve_worker_metrics(**_kwargs) -> None:
    """A worker's own /metrics (its pool's IdP calls), when REGISTRAR_WORKER_METRICS_PORT is set."""
    from django.conf import settings

    if settings.REGISTRAR_WORKER_METRICS_PORT:
        import logging

        from portal.metrics import serve_worker_metrics

        try:
            serve_worker_metrics(
                port=settings.REGISTRAR_WORKER_METRICS_PORT, addr=settings.REGISTRAR_WORKER_METRICS_ADDR
            )
        except OSError as exc:  # a busy port costs the metrics, not the deliveries
            log_event(
                logging.getLogger(__name__),
                "worker_metrics_unavailable",
                level=logging.ERROR,
                addr=settings.REGISTRAR_WORKER_METRICS_ADDR,
                port=settings.REGISTRAR_WORKER_METRICS_PORT,
                error=exc,
            )
