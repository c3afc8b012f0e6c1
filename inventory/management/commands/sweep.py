"""``python manage.py sweep expired|orphans|lapsed|unauthorized|cimd_drift`` — run one sweep now (same code as the beat task)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from inventory.sweeps import sweep_run, sweeps_available


class Command(BaseCommand):
    help = "Run one sweep now: expired, orphans, or one another app registered (lapsed, unauthorized, cimd_drift)."

    def add_arguments(self, parser):
        parser.add_argument("which", choices=sorted(sweeps_available()))
        parser.add_argument("--batch-size", type=int, default=None, help="rows locked per transaction")

    def handle(self, *args, which: str, batch_size: int | None, **options):
        result = sweep_run(which, **({"batch_size": batch_size} if batch_size else {}))
        self.stdout.write(self.style.SUCCESS(str(result)))
