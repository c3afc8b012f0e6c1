"""Writing to the outbox: an entry in the caller's transaction, and a nudge to a worker once it commits."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from inventory.models import Client, OutboxEntry
from portal.logs import log_event

logger = logging.getLogger(__name__)


def outbox_enqueue(*, client: Client, operation: str, deliver_after_commit: bool = True) -> OutboxEntry:
    """Write an outbox entry in the caller's transaction; nudge a worker once it commits.

    The nudge is only an optimisation: the periodic ``requeue_outbox`` task finds every due entry,
    so a lost message delays a change but never loses it.
    """
    entry = OutboxEntry.objects.create(
        client=client, idp_id=client.idp_id, operation=operation, next_attempt_at=timezone.now()
    )
    if deliver_after_commit:
        transaction.on_commit(lambda: outbox_nudge(client_id=entry.client_id))
    return entry


def outbox_nudge(*, client_id: int) -> None:
    """Ask a worker to deliver ``client_id``'s due entries now (best effort; the periodic requeue backs it up)."""
    try:
        from inventory.tasks import deliver_client_outbox  # the tasks module imports the outbox

        deliver_client_outbox.delay(client_id)
    except Exception:  # broker down: the periodic requeue will pick the entry up
        log_event(logger, "outbox_nudge_failed", level=logging.WARNING, client_id=client_id)
