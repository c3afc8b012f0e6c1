"""The Celery application and the beat schedule (task names as strings: portal imports no app)."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

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
    "sweep-stale": {"task": "inventory.tasks.sweep_stale", "schedule": crontab(hour=3, minute=17)},
    "notify-expiring": {"task": "inventory.tasks.notify_expiring", "schedule": crontab(hour=8, minute=0)},
    "reconcile-idp": {"task": "inventory.tasks.reconcile_all", "schedule": crontab(minute="*/30")},
    # Twice per REGISTRAR_REPORT_CACHE_SECONDS (default 60 s), so the snapshots never expire while beat runs.
    "refresh-report-snapshots": {"task": "inventory.tasks.refresh_report_snapshots", "schedule": 30.0},
    "sweep-lapsed": {"task": "approvals.tasks.sweep_lapsed", "schedule": crontab(minute="*/10")},
    "notify-approvers": {"task": "approvals.tasks.notify_approvers", "schedule": 60.0},
}
