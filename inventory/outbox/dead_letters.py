"""What a person does with a dead-lettered entry: retry it, or mark it resolved (the sync failures page)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory.choices import ENDED_STATES, OutboxOperation, OutboxStatus
from inventory.models import Client, OutboxEntry
from inventory.outbox.write import outbox_nudge
from portal.audit import Actor, audit_record


class OutboxError(Exception):
    """An outbox operation was refused (e.g. retrying an entry that is not dead)."""


def _lock_client_then_entry(entry: OutboxEntry) -> tuple[Client, OutboxEntry]:
    """Lock ``entry``'s client row, then the entry, in that order: the order delivery takes them (it locks the
    client to record an outcome, then releases the entry). A ``SELECT … FOR UPDATE`` over the entry joined to
    its client locks the entry first, and deadlocked with a worker recording that client's delivery (seen in
    the race suite: 16 retries at once while the worker delivered the first one's nudge)."""
    client_id = OutboxEntry.objects.filter(pk=entry.pk).values_list("client_id", flat=True).get()
    client = Client.objects.select_for_update().get(pk=client_id)
    locked = OutboxEntry.objects.select_for_update(of=("self",)).select_related("idp").get(pk=entry.pk)
    locked.client = client
    return client, locked


@transaction.atomic
def outbox_retry(*, entry: OutboxEntry, actor: Actor) -> OutboxEntry:
    """Give a dead-lettered entry a fresh set of attempts (admin's Retry button).

    A dead CREATE for a client that has since ended is superseded instead: the queued DELETE/DISABLE
    covers it. The client stays flagged ``sync_failed`` until its last dead entry is delivered. Retrying
    is the person's word that an unconfirmed earlier call (``inventory.outbox.journal``) left nothing behind at an
    IdP that cannot list, so that mark is cleared and the audit event says so.
    """
    client, locked = _lock_client_then_entry(entry)
    if locked.status != OutboxStatus.DEAD:
        raise OutboxError(f"outbox entry {locked.pk} is {locked.status}, not dead")
    superseded = locked.operation == OutboxOperation.CREATE and client.state in ENDED_STATES
    unconfirmed = locked.idp_call_started_at is not None
    locked.status = OutboxStatus.SUPERSEDED if superseded else OutboxStatus.PENDING
    locked.attempts = 0
    locked.next_attempt_at = timezone.now()
    locked.claimed_until = None
    locked.claimed_by = ""
    locked.idp_call_started_at = None
    locked.save(
        update_fields=["status", "attempts", "next_attempt_at", "claimed_until", "claimed_by", "idp_call_started_at"]
    )
    if superseded and not client.outbox.filter(status=OutboxStatus.DEAD).exists():
        Client.objects.filter(pk=client.pk).update(sync_failed=False)
    after = {"entry": locked.pk, "operation": locked.operation, "status": locked.status}
    if unconfirmed:
        after["unconfirmed_call_cleared"] = True
    audit_record(
        actor=actor,
        action="outbox.retry",
        object_type="client",
        object_id=client.registration_id,
        after=after,
    )
    if not superseded:
        transaction.on_commit(lambda: outbox_nudge(client_id=client.pk))
    return locked


@transaction.atomic
def outbox_resolve(*, entry: OutboxEntry, actor: Actor, reason: str) -> OutboxEntry:
    """A person's word that a dead-lettered disable or delete is done at the IdP (the admin's "Mark resolved").

    For what delivery cannot settle by itself: an IdP that refuses the management token and cannot say whether
    the client still exists, or a client whose id Registrar never learnt. The person checked the IdP (and
    removed the client there); ``reason`` says what they did. The entry becomes ``resolved``, the client is
    recorded as gone at the IdP, an ended client's dead create/update entries are superseded, and the client's
    ``sync_failed`` flag drops once nothing else of it is dead. One audit event names the person and the reason.
    """
    reason = (reason or "").strip()
    if not reason:
        raise OutboxError("say what you checked or did at the IdP (the reason is kept in the audit log)")
    client, locked = _lock_client_then_entry(entry)
    if locked.status != OutboxStatus.DEAD:
        raise OutboxError(f"outbox entry {locked.pk} is {locked.status}, not dead")
    if locked.operation not in (OutboxOperation.DISABLE, OutboxOperation.DELETE):
        raise OutboxError(f"only a dead disable or delete can be marked resolved; retry this {locked.operation}")
    now = timezone.now()
    locked.status = OutboxStatus.RESOLVED
    locked.delivered_at = now
    locked.claimed_until = None
    locked.claimed_by = ""
    locked.idp_call_started_at = None
    locked.save(update_fields=["status", "delivered_at", "claimed_until", "claimed_by", "idp_call_started_at"])
    superseded = 0
    if client.state in ENDED_STATES:
        superseded = client.outbox.filter(
            status=OutboxStatus.DEAD, operation__in=[OutboxOperation.CREATE, OutboxOperation.UPDATE]
        ).update(status=OutboxStatus.SUPERSEDED, idp_call_started_at=None)
    still_dead = client.outbox.filter(status=OutboxStatus.DEAD).exists()
    Client.objects.filter(pk=client.pk).update(
        idp_state={"deleted": True} if client.idp_client_id else {},
        idp_disabled_at=Coalesce(F("idp_disabled_at"), Value(now)),
        sync_failed=still_dead,
    )
    audit_record(
        actor=actor,
        action="outbox.resolved",
        object_type="client",
        object_id=client.registration_id,
        before={
            "entry": locked.pk,
            "operation": locked.operation,
            "status": OutboxStatus.DEAD,
            "error": (locked.last_error or "")[:500],
        },
        after={
            "entry": locked.pk,
            "status": locked.status,
            "idp": locked.idp.name,
            "superseded_entries": superseded,
            "sync_failed": still_dead,
        },
        reason=reason[:2000],
    )
    return locked
