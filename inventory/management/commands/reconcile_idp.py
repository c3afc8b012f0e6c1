"""python manage.py reconcile_idp [--idp NAME] [--dry-run]: compare IdPs with the inventory, print the diff."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from inventory.models import IdPConnection
from inventory.reconcile import reconcile_all_connections


class Command(BaseCommand):
    help = "List clients at each enabled IdP, compare with the inventory, print (and act on) the differences."

    def add_arguments(self, parser):
        parser.add_argument("--idp", help="only this IdP connection (by name)")
        parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")

    def handle(self, *args, idp=None, dry_run=False, **options):
        if idp and not IdPConnection.objects.filter(name=idp, enabled=True).exists():
            raise CommandError(f"no enabled IdP connection named {idp!r}")
        reports = reconcile_all_connections(dry_run=dry_run, name=idp)
        if not reports:
            self.stdout.write("no enabled IdP connections")
        for report in reports:
            for line in report.lines():
                self.stdout.write(line)
        if any(report.errors for report in reports):
            raise CommandError("reconciliation could not finish for every IdP (see errors above)")
