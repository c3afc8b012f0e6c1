"""``python manage.py fold_counts`` — fold the client and request count deltas into the rollups now (beat does it too)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from inventory.counts import counts_fold


class Command(BaseCommand):
    help = "Fold the client and request count deltas into the rollup tables (what beat's fold-counts task does)."

    def handle(self, *args, **options):
        self.stdout.write(self.style.SUCCESS(f"folded {counts_fold():,} deltas"))
