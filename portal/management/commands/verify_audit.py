"""Verify the audit log: exit 0 when everything verifies, 1 naming the first event or checkpoint that does not.

Recomputes the Merkle tree from the events, checks every stored checkpoint's signature and root, consistency
between successive checkpoints, the tiles, the old hash chain, the append-only triggers, and compares with
the checkpoints the witnesses hold (the configured witness directories, or ``--witness PATH``).
"""

import sys

from django.core.management.base import BaseCommand

from portal.tlog.verify import verify_log


class Command(BaseCommand):
    help = "Recompute the audit log's Merkle tree, check every checkpoint and report the first disagreement."

    def add_arguments(self, parser):
        parser.add_argument(
            "--witness",
            action="append",
            metavar="PATH",
            help="a witness directory to compare with (repeatable); default: the configured ones",
        )

    def handle(self, *args, **options):
        report = verify_log(witness_paths=options["witness"])
        witnessed = (
            f"{report.witnessed_verified} witnessed checkpoints ({', '.join(report.witnesses)})"
            if report.witnesses
            else "no witness directory to compare with"
        )
        pending = f"; {report.unsealed} events not sealed yet" if report.unsealed else ""
        if report.problem is None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"audit log intact: {report.events_verified} events verified ({report.chained_events} of them also "
                    f"on the old hash chain), {report.checkpoints_verified} signed checkpoints, {witnessed}{pending}"
                )
            )
            return
        self.stderr.write(
            self.style.ERROR(
                f"audit log BROKEN at {report.problem} ({report.events_verified} events verified before it)"
            )
        )
        sys.exit(1)
