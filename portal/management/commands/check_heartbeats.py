"""Exit 0 when every worker queue had a heartbeat recently, 1 naming the silent ones (a health check for beat).

A queue's heartbeat is written by a worker running the task beat sends it every REGISTRAR_HEARTBEAT_SECONDS,
so a fresh one means beat, the broker, a worker and the database all work. Also prints the periodic sweeps'
last runs.
"""

import sys

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from portal.heartbeats import QUEUE_PREFIX, SWEEP_PREFIX, heartbeats_by_prefix


class Command(BaseCommand):
    help = "Report each worker queue's last heartbeat; exit 1 if one is older than --max-age seconds."

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="seconds (default: three heartbeat intervals, 3 x REGISTRAR_HEARTBEAT_SECONDS)",
        )

    def handle(self, *args, max_age=None, **options):
        limit = max_age if max_age is not None else 3 * settings.REGISTRAR_HEARTBEAT_SECONDS
        if limit <= 0:
            self.stderr.write(self.style.ERROR("--max-age must be a positive number of seconds"))
            sys.exit(2)
        now = timezone.now()
        queues = heartbeats_by_prefix(QUEUE_PREFIX)
        silent = []
        for queue in settings.REGISTRAR_HEARTBEAT_QUEUES:
            beat = queues.get(queue)
            if beat is None:
                silent.append(queue)
                self.stdout.write(f"queue={queue} last_seen=never")
                continue
            age = (now - beat.beat_at).total_seconds()
            if age > limit:
                silent.append(queue)
            self.stdout.write(f"queue={queue} last_seen_seconds={age:.0f} host={beat.host or '-'}")
        for sweep, beat in sorted(heartbeats_by_prefix(SWEEP_PREFIX).items()):
            duration = "-" if beat.duration_seconds is None else f"{beat.duration_seconds:.2f}"
            self.stdout.write(
                f"sweep={sweep} last_run_seconds={(now - beat.beat_at).total_seconds():.0f} duration_seconds={duration}"
            )
        if silent:
            self.stderr.write(self.style.ERROR(f"no heartbeat within {limit:.0f} s from queue(s): {', '.join(silent)}"))
            sys.exit(1)
