"""``python manage.py reconcile_counts [--repair]`` — recount the rollups from the clients and the registration
requests (every count source, ``inventory.counts``) and report drift.

Exits 1 when drift was found and not repaired (so cron or CI notices); ``--repair`` corrects the rollups and
records one audit event (``counts.repaired``). Beat runs the repairing variant nightly.
"""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand

from inventory.counts import counts_reconcile


class Command(BaseCommand):
    help = "Recount the rollups from the clients and requests; report drift, and with --repair correct it (audited)."

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="correct the rollups (one audit event)")

    def handle(self, *args, repair: bool, **options):
        drift = counts_reconcile(repair=repair)
        if not drift.keys:
            self.stdout.write(self.style.SUCCESS("counts: no drift"))
            return
        verdict = "repaired" if drift.repaired else "not repaired (run with --repair)"
        self.stdout.write(f"counts: drift in {drift.keys} keys, {drift.clients} rows off, {verdict}")
        self.stdout.write(json.dumps(drift.summary(), sort_keys=True))
        if not drift.repaired:
            sys.exit(1)
