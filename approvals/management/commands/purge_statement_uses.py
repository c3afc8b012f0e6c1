"""Forget the jti of software statements that have expired (the beat task's twin)."""

from django.core.management.base import BaseCommand

from approvals.statements import statement_uses_purge


class Command(BaseCommand):
    help = "Delete the records of used software statement jtis whose statements have expired."

    def handle(self, *args, **options):
        self.stdout.write(f"purged={statement_uses_purge()}")
