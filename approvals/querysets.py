"""Reusable read filters for intake models."""

from __future__ import annotations

from django.db import models

from approvals.choices import RequestState


class RegistrationRequestQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(state=RequestState.PENDING)

    def awaiting_decision_by(self, user):
        """Pending requests this approver may still act on (not their own, not already decided by them)."""
        return (
            self.pending()
            .exclude(owner=user)
            .exclude(decisions__approver=user)
        )
