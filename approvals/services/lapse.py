"""Pending requests nobody decided in time lapse (the ``sweep_lapsed`` task and command)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from portal.audit import Actor, audit_record_many


def request_lapse_due(*, now=None, batch_size: int | None = None) -> int:
    """Lapse pending requests older than REGISTRAR_REQUEST_LAPSE_DAYS. Returns how many lapsed.

    Set-based and batched: each batch locks its rows with SKIP LOCKED (so concurrent sweeps and
    a concurrent decision never do the same row twice), flips them with one UPDATE and writes the
    audit events with one bulk append — one transaction per batch.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.REGISTRAR_REQUEST_LAPSE_DAYS)
    batch_size = batch_size or settings.REGISTRAR_SWEEP_BATCH_SIZE
    total = 0
    actor = Actor.system("sweep_lapsed")
    reason = f"no decision within {settings.REGISTRAR_REQUEST_LAPSE_DAYS} days"
    while True:
        with transaction.atomic():
            rows = list(
                RegistrationRequest.objects.pending()
                .filter(created_at__lt=cutoff)
                .order_by("created_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", "public_id", "policy_version")[:batch_size]
            )
            if not rows:
                return total
            RegistrationRequest.objects.filter(pk__in=[r[0] for r in rows], state=RequestState.PENDING).update(
                state=RequestState.LAPSED, decided_at=now, decision_reason=reason
            )
            audit_record_many(
                [
                    {
                        "actor": actor,
                        "action": "request.lapse",
                        "object_type": "registration_request",
                        "object_id": public_id,
                        "before": {"state": RequestState.PENDING},
                        "after": {"state": RequestState.LAPSED},
                        "reason": reason,
                        "policy_version": policy_version,
                    }
                    for _pk, public_id, policy_version in rows
                ]
            )
            total += len(rows)
        if len(rows) < batch_size:
            return total
