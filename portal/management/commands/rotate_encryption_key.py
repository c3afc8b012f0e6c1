"""Re-encrypt every stored secret with the current REGISTRAR_ENCRYPTION_KEY (step 3 of a key rotation)."""

from django.core.management.base import BaseCommand, CommandError

from portal.audit import Actor
from portal.keyrotation import encryption_key_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt IdP credentials and clients' IdP state with REGISTRAR_ENCRYPTION_KEY, so the keys in "
        "REGISTRAR_OLD_ENCRYPTION_KEYS can be removed. Safe to run while Registrar serves; safe to re-run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be rewritten; change nothing")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, dry_run=False, batch_size=500, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        result = encryption_key_rotate(
            actor=Actor.system("rotate_encryption_key"), dry_run=dry_run, batch_size=batch_size
        )
        verb = "would rewrite" if dry_run else "rewrote"
        self.stdout.write(
            f"{verb} {result.rewritten}, already current {result.current}, changed meanwhile "
            f"{result.changed_meanwhile}, unreadable {result.unreadable} "
            f"({', '.join(result.columns)})"
        )
        if result.unreadable:
            raise CommandError(
                f"{result.unreadable} value(s) could not be decrypted with any configured key: keep "
                "the old key(s) in REGISTRAR_OLD_ENCRYPTION_KEYS until they are found"
            )
