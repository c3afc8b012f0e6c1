"""``python manage.py sweep expired|orphans|lapsed|stale`` — run one sweep now (same code as the beat task)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from inventory.sweeps import SWEEPS


class Command(BaseCommand):
    help = "Run one lifecycle sweep now: expired, orphans, lapsed or stale."

    def add_arguments(self, parser):
        parser.add_argument("which", choices=sorted(SWEEPS))
        parser.add_argument("--batch-size", type=int, default=None, help="rows locked per transaction")

    def handle(self, *args, which: str, batch_size: int | None, **options):
        kwargs = {"batch_size": batch_size} if batch_size and which != "lapsed" else {}
        result = SWEEPS[which](**kwargs)
        self.stdout.write(self.style.SUCCESS(str(result)))
