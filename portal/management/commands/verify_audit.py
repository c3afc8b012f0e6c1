"""Verify the audit hash chain: exit 0 when intact, 1 naming the first broken event otherwise."""

import sys

from django.core.management.base import BaseCommand

from portal.audit import verify_chain


class Command(BaseCommand):
    help = "Re-compute the audit log's hash chain and report the first broken event."

    def handle(self, *args, **options):
        checked, broken = verify_chain()
        if broken is None:
            self.stdout.write(self.style.SUCCESS(f"audit chain intact: {checked} events verified"))
            return
        self.stderr.write(
            self.style.ERROR(f"audit chain BROKEN at event {broken.event_id}: {broken.problem} "
                             f"({checked} events verified before it)")
        )
        sys.exit(1)
