"""Lapse pending registration requests older than REGISTRAR_REQUEST_LAPSE_DAYS (the beat task's twin)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from approvals.services import request_lapse_due


class Command(BaseCommand):
    help = "Lapse pending registration requests nobody decided within REGISTRAR_REQUEST_LAPSE_DAYS."

    def handle(self, *args, **options):
        count = request_lapse_due()
        self.stdout.write(f"lapsed={count} lapse_days={settings.REGISTRAR_REQUEST_LAPSE_DAYS}")
