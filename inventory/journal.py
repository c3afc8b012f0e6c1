"""The delivery journal for IdPs that cannot list their clients (``BaseConnector.can_list`` is False).

With a listing, a call whose answer was lost (a crash, a timeout) is recovered by looking: a retried create
finds its client by the correlation marker and adopts it. Without one there is nothing to look at, so
delivery (``inventory.delivery``) writes down what it is about to do and what the IdP answered:

1. **intent** — :func:`journal_start` sets ``OutboxEntry.idp_call_started_at`` (one statement, committed)
   just before the HTTP call;
2. **answer** — :func:`journal_land` stores the IdP's answer on the client (``idp_client_id`` and the
   encrypted ``idp_state``: the new ``registration_access_token`` and ``registration_client_uri``) and clears
   the intent, in its own short transaction, the moment the answer arrives — before the state transition,
   the audit event or anything else that could fail or wait;
3. **no effect** — :func:`journal_clear` clears the intent when the failure proves the IdP did nothing
   (connection refused, 429/503, a 4xx refusal).

A retry then knows where it stands: an answer on the client is adopted (no second create, and the rotated
management token is the one in use); an intent still set means an earlier call may have taken effect without
Registrar learning its answer (a timeout, a dropped connection, a worker killed mid-call). That window cannot
be closed without a listing, so such a create is not repeated blindly: it becomes a sync failure for a person
(``Unconfirmed``), unless the connection's admin opted in with config ``"recreate_unconfirmed": true``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.choices import OutboxOperation
from inventory.models import Client, OutboxEntry

#: Operations whose call can bring a client into existence at the IdP (an update recreates a missing client).
CREATING_OPERATIONS = (OutboxOperation.CREATE, OutboxOperation.UPDATE)


def journal_start(entry: OutboxEntry, worker: str) -> bool:
    """Record, durably, that a call for ``entry`` is about to start. False if the worker lost its lease."""
    now = timezone.now()
    started = OutboxEntry.objects.filter(pk=entry.pk, claimed_by=worker[:128]).update(idp_call_started_at=now)
    if started:
        entry.idp_call_started_at = now
    return bool(started)


def journal_land(entry: OutboxEntry, worker: str, client_fields: dict[str, Any]) -> None:
    """Store the IdP's answer on the client and mark the call's outcome known, in one short transaction."""
    with transaction.atomic():
        if client_fields:
            Client.objects.filter(pk=entry.client_id).update(**client_fields)
        OutboxEntry.objects.filter(pk=entry.pk, claimed_by=worker[:128]).update(idp_call_started_at=None)
    entry.idp_call_started_at = None


def journal_clear(entry: OutboxEntry, worker: str) -> None:
    """The call provably had no effect at the IdP: nothing is left unconfirmed."""
    OutboxEntry.objects.filter(pk=entry.pk, claimed_by=worker[:128]).update(idp_call_started_at=None)
    entry.idp_call_started_at = None


def unconfirmed_create(client: Client, *, exclude: int | None = None) -> OutboxEntry | None:
    """An entry of ``client`` whose creating call may have taken effect unseen (its intent is still set)."""
    return (
        OutboxEntry.objects.filter(
            client_id=client.pk, operation__in=CREATING_OPERATIONS, idp_call_started_at__isnull=False
        )
        .exclude(pk=exclude)
        .order_by("id")
        .first()
    )
