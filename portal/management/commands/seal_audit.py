"""Run the audit log's sequencer now, until every waiting event is sealed (what beat runs every second).

Useful after an upgrade (events of the old hash chain are sealed in their order) and in scripts.
"""

from django.core.management.base import BaseCommand, CommandError

from portal.tlog.sequencer import log_seal, seal_lag_seconds


class Command(BaseCommand):
    help = "Give waiting audit events their log index, sign checkpoints and send them to the witnesses."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None, help="events per checkpoint")

    def handle(self, *args, **options):
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be 1 or more")
        total, size = 0, None
        while True:
            report = log_seal(batch_size=options["batch_size"], time_budget=30)
            total += report.sealed
            size = report.tree_size or size
            if report.busy or not report.sealed:
                break
        lag = seal_lag_seconds()
        busy = " (another sequencer is running)" if report.busy else ""
        self.stdout.write(
            f"sealed {total} events; tree size {size if size is not None else 'unchanged'}; seal lag {lag:.1f} s{busy}"
        )
