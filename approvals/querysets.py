"""Reusable read filters for intake models."""

from __future__ import annotations

from django.db import models

from approvals.choices import RequestState


def tier_rank():
    """high=2, medium=1, else 0: the queue's primary sort key. The partial index
    ``request_queue_order_idx`` is built on this exact expression, so keep them one function."""
    return models.Case(
        models.When(risk_tier="high", then=models.Value(2)),
        models.When(risk_tier="medium", then=models.Value(1)),
        default=models.Value(0),
        output_field=models.IntegerField(),
    )


class RegistrationRequestQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(state=RequestState.PENDING)

    def awaiting_decision_by(self, user):
        """Pending requests this approver may still act on (not their own, not already decided by them)."""
        return self.pending().exclude(owner=user).exclude(decisions__approver=user)
