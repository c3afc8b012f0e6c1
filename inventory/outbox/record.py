"""Recording what a delivery came to: delivered (one entry, or many creates at once), retry later, or dead.

Every outcome ends the entry's lease (``leases.release``) and is recorded by the thread that claimed it.

* **Delivered.** The client's IdP fields are stored, the entry marked done, a provisioning client activated
  through the lifecycle service and, for anything but a plain create, an audit event written. The common case
  of the batch path — a create that succeeded for a client still in ``provisioning`` — is recorded for many
  clients in one transaction (:func:`record_created_many`).
* **Errors.** ``Transient`` → retry with exponential backoff and jitter, up to ``REGISTRAR_OUTBOX_MAX_ATTEMPTS``;
  then, like ``BadRequest`` and other non-transient errors, the entry is dead-lettered, the client flagged
  ``sync_failed``, and an audit event written. Error texts stored and logged come from the connectors, which
  censor secrets.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory.choices import ENDED_STATES, ClientState, OutboxOperation, OutboxStatus
from inventory.connectors.errors import ConnectorError, Transient
from inventory.lifecycle import (
    TRANSITION_FIELDS,
    IllegalTransition,
    client_record_idp_disabled,
    client_transition,
    clients_transition_many,
)
from inventory.models import Client, OutboxEntry
from inventory.outbox.config import max_attempts, setting
from inventory.outbox.leases import Claim, release
from inventory.outbox.push import IdpResult
from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)

OUTBOX_ACTOR = Actor.system("outbox")


class DeliveryOutcome(StrEnum):
    """What became of a claimed entry (the suffix of its ``outbox_<outcome>`` log event)."""

    DELIVERED = "delivered"
    SUPERSEDED = "superseded"
    RETRY = "retry"
    DEAD = "dead"


def backoff_seconds(attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Delay before attempt ``attempts + 1``: exponential, capped, with jitter in [half, full].

    Jitter spreads the retries of many clients that failed together (an IdP outage) so they do not
    return as one thundering herd. An IdP's ``Retry-After`` is honoured as a floor (within the cap).
    """
    base = setting("REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS", 5.0)
    cap = setting("REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS", 600.0)
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    delay = (rng or random).uniform(delay / 2, delay)
    if retry_after:
        delay = max(delay, min(cap, retry_after))
    return delay


def error_text(exc: BaseException) -> str:
    # Connector errors are censored by the connector; anything else is reduced to its type and message.
    return f"{type(exc).__name__}: {exc}"[:4000]


def finish(claim: Claim, *, status: str, outcome: DeliveryOutcome) -> DeliveryOutcome:
    """Close the entry without an IdP call (e.g. superseded)."""
    release(claim, status=status, delivered_at=timezone.now(), last_error="")
    log_event(
        logger,
        "outbox_" + outcome,
        entry_id=claim.entry.pk,
        client_id=claim.entry.client_id,
        operation=claim.entry.operation,
    )
    return outcome


def supersede_if_ended(claim: Claim) -> DeliveryOutcome | None:
    """A CREATE for a client that ended before it ever reached the IdP: nothing to create. The DELETE/DISABLE
    queued by the transition cleans up anything an earlier attempt might have left behind."""
    client = claim.entry.client
    if claim.entry.operation == OutboxOperation.CREATE and client.state in ENDED_STATES and not client.idp_client_id:
        return finish(claim, status=OutboxStatus.SUPERSEDED, outcome=DeliveryOutcome.SUPERSEDED)
    return None


def idp_fields(entry: OutboxEntry, client: Client, result: IdpResult) -> dict[str, Any]:
    """The client's IdP fields after ``result`` (its id, and the remote state to store encrypted); also set on
    ``client``. Applying them twice changes nothing, so a journaled answer and the success record agree."""
    fields: dict[str, Any] = {}
    push = result.push
    if push is not None:
        previous = {} if (result.adopted or entry.operation == OutboxOperation.CREATE) else dict(client.idp_state or {})
        state = {**previous, **push.remote_state}
        if push.deleted:
            state = {"deleted": True}
        elif entry.operation != OutboxOperation.DISABLE:
            state.pop("deleted", None)
        fields["idp_client_id"] = client.idp_client_id = push.client_id
        fields["idp_state"] = client.idp_state = state
    elif result.gone:
        fields["idp_state"] = client.idp_state = {"deleted": True} if client.idp_client_id else {}
    return fields


# -- delivered ----------------------------------------------------------------------------------------------


@transaction.atomic
def record_delivered(claim: Claim, result: IdpResult) -> DeliveryOutcome:
    entry = claim.entry
    # The client as read with the claim. Only delivery writes the idp_* fields and we hold the lease, so a
    # plain UPDATE (which also row-locks the client) is enough; the state change below re-locks and
    # re-checks the state through the lifecycle service.
    client = entry.client
    now = timezone.now()
    fields: dict[str, Any] = {"last_synced_at": now, **idp_fields(entry, client, result)}

    disabled = entry.operation in (OutboxOperation.DISABLE, OutboxOperation.DELETE)
    if disabled:
        fields["idp_disabled_at"] = Coalesce(F("idp_disabled_at"), Value(now))
    if client.sync_failed and not client.outbox.filter(status=OutboxStatus.DEAD).exclude(pk=entry.pk).exists():
        fields["sync_failed"] = client.sync_failed = False
    Client.objects.filter(pk=client.pk).update(**fields)
    release(claim, status=OutboxStatus.DONE, delivered_at=now, last_error="")

    if disabled:
        client.idp_disabled_at = client.idp_disabled_at or now
        client_record_idp_disabled(client.pk, client.idp_disabled_at)  # the expiry overshoot
    if entry.operation in (OutboxOperation.CREATE, OutboxOperation.UPDATE) and client.state == ClientState.PROVISIONING:
        try:
            client_transition(
                client=client,
                target=ClientState.ACTIVE,
                actor=OUTBOX_ACTOR,
                reason=f"created at IdP {entry.idp.name}",
                push_to_idp=False,
            )
        except IllegalTransition:
            client.refresh_from_db(fields=["state"])  # ended meantime; its DELETE/DISABLE is queued behind us
    if entry.operation != OutboxOperation.CREATE or result.adopted or client.state != ClientState.ACTIVE:
        audit_record(
            actor=OUTBOX_ACTOR,
            action=f"client.idp_{entry.operation}" + ("_adopted" if result.adopted else ""),
            object_type="client",
            object_id=client.registration_id,
            after={
                "idp": entry.idp.name,
                "idp_client_id": client.idp_client_id,
                "note": result.note,
                "attempts": entry.attempts,
            },
            policy_version=client.policy_version,
        )
    log_event(
        logger,
        "outbox_delivered",
        entry_id=entry.pk,
        client_id=client.pk,
        operation=entry.operation,
        idp_client_id=client.idp_client_id,
        adopted=result.adopted or None,
        note=result.note or None,
    )
    return DeliveryOutcome.DELIVERED


def is_plain_create(claim: Claim, result: IdpResult) -> bool:
    """A create that succeeded for a client still in ``provisioning``: :func:`record_created_many` can take it."""
    client = claim.entry.client
    return (
        claim.entry.operation == OutboxOperation.CREATE
        and result.push is not None
        and not result.adopted
        and not result.push.deleted
        and client.state == ClientState.PROVISIONING
        and not client.idp_client_id
        and not client.sync_failed
    )


def record_created_many(created: list[tuple[Claim, IdpResult]]) -> tuple[int, list[int]]:
    """Record many plain creates (:func:`is_plain_create`) in one transaction: IdP fields in one UPDATE, entries
    in one UPDATE, one set-based activation with one chained audit insert. A client that changed while the IdP
    was called goes through :func:`record_delivered` instead.

    Returns ``(entries recorded, ids of the bulk-recorded clients with entries queued behind the one delivered)``.
    """
    now = timezone.now()
    changed_meanwhile: list[tuple[Claim, IdpResult]] = []
    with transaction.atomic():
        by_id = {claim.entry.client_id: (claim, result) for claim, result in created}
        locked = list(
            Client.objects.select_for_update()
            .filter(pk__in=list(by_id))
            .order_by("pk")
            .only(*TRANSITION_FIELDS, "idp_client_id", "sync_failed")
        )
        ready: list[Client] = []
        for client in locked:
            claim, result = by_id[client.pk]
            if client.state != ClientState.PROVISIONING or client.idp_client_id or client.sync_failed:
                changed_meanwhile.append((claim, result))
                continue
            push = result.push
            assert push is not None  # a plain create's answer
            client.idp_client_id = push.client_id
            client.idp_state = dict(push.remote_state)
            client.last_synced_at = now
            ready.append(client)
        if ready:
            _store_idp_fields(ready, now)
            entry_ids = [by_id[c.pk][0].entry.pk for c in ready]
            OutboxEntry.objects.filter(pk__in=entry_ids, status=OutboxStatus.PENDING).update(
                status=OutboxStatus.DONE, delivered_at=now, claimed_until=None, claimed_by="", last_error=""
            )
            clients_transition_many(
                clients=ready,
                target=ClientState.ACTIVE,
                actor=OUTBOX_ACTOR,
                reason="created at IdP",
                now=now,
                push_to_idp=False,
                cascade=False,
            )
    for claim, result in changed_meanwhile:
        record_delivered(claim, result)
    followups: list[int] = []
    for client in ready:
        claim = by_id[client.pk][0]
        if not claim.last:
            followups.append(client.pk)
        log_event(
            logger,
            "outbox_delivered",
            entry_id=claim.entry.pk,
            client_id=client.pk,
            operation=claim.entry.operation,
            idp_client_id=client.idp_client_id,
        )
    return len(ready) + len(changed_meanwhile), followups


def _store_idp_fields(clients: list[Client], now: datetime) -> None:
    """Write each client's IdP id and (encrypted) registration state in one statement."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        Client.objects.bulk_update(clients, ["idp_client_id", "idp_state", "last_synced_at"])
        return
    # bulk_update builds a CASE per field and row, which costs more than the rest of the batch together.
    state_field = Client._meta.get_field("idp_state")
    values = ", ".join(["(%s::bigint, %s::varchar, %s::text)"] * len(clients))
    params: list[Any] = []
    for client in clients:
        params += [client.pk, client.idp_client_id, state_field.get_db_prep_save(client.idp_state, connection)]
    table = connection.ops.quote_name(Client._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS c SET idp_client_id = v.idp_client_id, idp_state = v.idp_state, "  # noqa: S608
            f"last_synced_at = %s FROM (VALUES {values}) AS v(id, idp_client_id, idp_state) WHERE c.id = v.id",
            [now, *params],
        )


# -- failed -------------------------------------------------------------------------------------------------


def record_failure(claim: Claim, exc: BaseException) -> DeliveryOutcome:
    if isinstance(exc, Transient):
        return retry_or_dead(claim, exc)
    if not isinstance(exc, ConnectorError):  # a bug or an unexpected answer: dead-letter for a person, never loop
        log_event(logger, "outbox_delivery_crashed", level=logging.ERROR, entry_id=claim.entry.pk, exc_info=exc)
    return dead(claim, exc)


def retry_or_dead(claim: Claim, exc: Transient) -> DeliveryOutcome:
    attempts = claim.entry.attempts  # the claim already counted this attempt
    if attempts >= max_attempts():
        return dead(claim, exc)
    delay = backoff_seconds(attempts, retry_after=exc.retry_after)
    release(claim, next_attempt_at=timezone.now() + timedelta(seconds=delay), last_error=error_text(exc))
    log_event(
        logger,
        "outbox_retry_scheduled",
        level=logging.WARNING,
        entry_id=claim.entry.pk,
        client_id=claim.entry.client_id,
        operation=claim.entry.operation,
        attempts=attempts,
        delay_s=round(delay, 1),
        error=type(exc).__name__,
    )
    return DeliveryOutcome.RETRY


@transaction.atomic
def dead(claim: Claim, exc: BaseException) -> DeliveryOutcome:
    """Dead-letter the entry and flag its client ``sync_failed`` (one audit event)."""
    entry = claim.entry
    client = Client.objects.select_for_update().get(pk=entry.client_id)
    if not release(claim, status=OutboxStatus.DEAD, last_error=error_text(exc)):
        return DeliveryOutcome.RETRY  # another worker owns it now; let it decide
    if not client.sync_failed:
        client.sync_failed = True
        client.save(update_fields=["sync_failed"])
    audit_record(
        actor=OUTBOX_ACTOR,
        action="outbox.dead_lettered",
        object_type="client",
        object_id=client.registration_id,
        after={
            "entry": entry.pk,
            "operation": entry.operation,
            "idp": entry.idp.name,
            "attempts": entry.attempts,
            "error": error_text(exc)[:500],
        },
        policy_version=client.policy_version,
    )
    log_event(
        logger,
        "outbox_dead_lettered",
        level=logging.ERROR,
        entry_id=entry.pk,
        client_id=client.pk,
        operation=entry.operation,
        error=type(exc).__name__,
    )
    return DeliveryOutcome.DEAD
