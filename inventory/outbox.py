"""Writing to the outbox. Delivery lives in ``inventory.delivery`` and ``inventory.tasks``."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from inventory.models import Client, OutboxEntry


def outbox_enqueue(*, client: Client, operation: str, deliver_after_commit: bool = True) -> OutboxEntry:
    """Write an outbox entry in the caller's transaction; nudge a worker once it commits.

    The nudge is only an optimisation: the periodic ``requeue_outbox`` task finds every due entry,
    so a lost message delays a change but never loses it.
    """
    entry = OutboxEntry.objects.create(
        client=client, idp_id=client.idp_id, operation=operation, next_attempt_at=timezone.now()
    )
    if deliver_after_commit:
        transaction.on_commit(lambda: _nudge_worker(entry.client_id))
    return entry


def _nudge_worker(client_id: int) -> None:
    try:
        from inventory.tasks import deliver_client_outbox

        deliver_client_outbox.delay(client_id)
    except Exception:  # broker down: the periodic requeue will pick the entry up
        import logging

        logging.getLogger(__name__).warning("event=outbox_nudge_failed client_id=%s", client_id)
