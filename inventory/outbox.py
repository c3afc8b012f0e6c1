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


def outbox_nudge(*, client_id: int) -> None:
    """Ask a worker to deliver ``client_id``'s due entries now (best effort; the periodic requeue backs it up)."""
    _nudge_worker(client_id)


def _nudge_worker(client_id: int) -> None:
    try:
        from inventory.tasks import deliver_client_outbox

        deliver_client_outbox.delay(client_id)
    except Exception:  # broker down: the periodic requeue will pick the entry up
        import logging

        logging.getLogger(__name__).warning("event=outbox_nudge_failed client_id=%s", client_id)


class OutboxError(Exception):
    """An outbox operation was refused (e.g. retrying an entry that is not dead)."""


@transaction.atomic
def outbox_retry(*, entry: OutboxEntry, actor) -> OutboxEntry:
    """Give a dead-lettered entry a fresh set of attempts (admin's Retry button).

    A dead CREATE for a client that has since ended is superseded instead: the queued DELETE/DISABLE
    covers it. The client stays flagged ``sync_failed`` until its last dead entry is delivered.
    """
    from inventory.choices import ENDED_STATES, OutboxOperation, OutboxStatus
    from portal.audit import audit_record

    locked = OutboxEntry.objects.select_for_update().select_related("client").get(pk=entry.pk)
    if locked.status != OutboxStatus.DEAD:
        raise OutboxError(f"outbox entry {locked.pk} is {locked.status}, not dead")
    client = locked.client
    superseded = locked.operation == OutboxOperation.CREATE and client.state in ENDED_STATES
    locked.status = OutboxStatus.SUPERSEDED if superseded else OutboxStatus.PENDING
    locked.attempts = 0
    locked.next_attempt_at = timezone.now()
    locked.claimed_until = None
    locked.claimed_by = ""
    locked.save(update_fields=["status", "attempts", "next_attempt_at", "claimed_until", "claimed_by"])
    if superseded and not client.outbox.filter(status=OutboxStatus.DEAD).exists():
        Client.objects.filter(pk=client.pk).update(sync_failed=False)
    audit_record(
        actor=actor,
        action="outbox.retry",
        object_type="client",
        object_id=client.registration_id,
        after={"entry": locked.pk, "operation": locked.operation, "status": locked.status},
    )
    if not superseded:
        transaction.on_commit(lambda: _nudge_worker(client.pk))
    entry.status, entry.attempts = locked.status, locked.attempts
    return locked
