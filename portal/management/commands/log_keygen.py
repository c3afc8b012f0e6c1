"""Generate an Ed25519 key for the audit log; prints the signer key (secret) and the verifier key (public).

    python manage.py log_keygen --origin registrar.example.com/audit-log
    python manage.py log_keygen --verifier    # the verifier key of the configured log key (e.g. the demo's)

Put the signer key in REGISTRAR_LOG_SIGNING_KEY (or a file named by REGISTRAR_LOG_SIGNING_KEY_FILE, mode
0600) on the workers that run the sequencer; give the verifier key to auditors and monitors. See
docs/audit-log.md ("Key rotation").
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.tlog.note import NoteError, generate_signer


class Command(BaseCommand):
    help = "Generate an audit log signing key (C2SP signed-note Ed25519 format)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--origin", default=None, help="the log's name and checkpoint origin line (default REGISTRAR_LOG_ORIGIN)"
        )
        parser.add_argument(
            "--verifier",
            action="store_true",
            help="generate nothing: print the verifier (public) key of the configured log key, for auditors",
        )

    def handle(self, *args, **options):
        if options["verifier"]:
            from portal.tlog.keys import log_verifier

            self.stdout.write(f"{log_verifier().encoded}\n")
            return
        try:
            signer = generate_signer(options["origin"] or settings.REGISTRAR_LOG_ORIGIN)
        except NoteError as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"REGISTRAR_LOG_SIGNING_KEY={signer.encoded}\n")
        self.stdout.write(f"REGISTRAR_LOG_VERIFIER_KEY={signer.verifier.encoded}\n")
