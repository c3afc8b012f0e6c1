"""Reusable read filters for inventory models (selectors build on these)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, OutboxStatus


class ClientQuerySet(models.QuerySet):
    def live(self):
        return self.filter(state__in=LIVE_STATES)

    def active(self):
        return self.filter(state=ClientState.ACTIVE)

    def owned_by(self, user):
        return self.filter(owner=user)

    def due_for_expiry(self, now=None):
        return self.filter(state=ClientState.ACTIVE, expires_at__lte=now or timezone.now())

    def orphaned(self):
        return self.filter(orphaned_at__isnull=False)

    def unmanaged(self):
        return self.filter(managed=False)


class OutboxQuerySet(models.QuerySet):
    def due(self, now=None):
        return self.filter(status=OutboxStatus.PENDING, next_attempt_at__lte=now or timezone.now())
