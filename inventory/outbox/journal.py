"""The delivery journal for IdPs that cannot list their clients (``BaseConnector.can_list`` is False).

With a listing, a call whose answer was lost (a crash, a timeout) is recovered by looking: a retried create
finds its client by the correlation marker and adopts it. Without one there is nothing to look at, so
delivery writes down what it is about to do and what the IdP answered:

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

Every call to such an IdP goes through :func:`journaled_call`, in the recording thread (it writes the journal).
"""

from __future__ import annotations

from typing import Any, TypeGuard

from django.db import transaction
from django.utils import timezone

from inventory.choices import OutboxOperation
from inventory.connectors.base import BaseConnector
from inventory.connectors.errors import AccessDenied, ConnectorError, Transient, Unconfirmed
from inventory.models import Client, OutboxEntry
from inventory.outbox.leases import Claim
from inventory.outbox.push import IdpResult, push_entry
from inventory.outbox.record import idp_fields

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


# -- the journaled call -------------------------------------------------------------------------------------


def is_journaled(connector: BaseConnector | BaseException) -> TypeGuard[BaseConnector]:
    """Whether calls through ``connector`` are journaled (an IdP that cannot list)."""
    return isinstance(connector, BaseConnector) and not connector.can_list


def journaled_call(claim: Claim, connector: BaseConnector) -> IdpResult | BaseException:
    """``push.call_idp`` for an IdP that cannot list, in the recording thread (it writes the journal).

    Before the call: an answer an earlier attempt stored is adopted, and a create an earlier attempt may
    have made unseen is refused (:class:`Unconfirmed`). The intent is written, the call made, and its answer
    stored on the client at once (:func:`journal_land`); a failure that proves the IdP did nothing clears the
    intent, and a create that may have taken effect unseen becomes :class:`Unconfirmed` right away.
    """
    entry, client = claim.entry, claim.entry.client
    operation = entry.operation
    unsure = entry.idp_call_started_at is not None  # an earlier attempt's call never recorded its outcome
    if operation == OutboxOperation.CREATE and client.idp_client_id:
        return IdpResult(push=None, adopted=True, note="answer stored by an earlier attempt")
    creates = operation == OutboxOperation.CREATE or (
        operation == OutboxOperation.UPDATE and (not client.idp_client_id or (client.idp_state or {}).get("deleted"))
    )
    blind_retry = connector.config.get("recreate_unconfirmed") is True
    if creates and entry.idp_call_started_at is not None and not blind_retry:  # unsure
        started = entry.idp_call_started_at.strftime("%Y-%m-%d %H:%M:%S")
        return _unconfirmed_create(
            claim, cause=f"an earlier attempt's call, started {started} UTC, never recorded its outcome"
        )
    if operation in (OutboxOperation.DELETE, OutboxOperation.DISABLE) and not client.idp_client_id and not blind_retry:
        earlier = unconfirmed_create(client, exclude=entry.pk)
        if earlier is not None:
            return Unconfirmed(
                f"IdP {entry.idp.name!r} may hold this client: an earlier {earlier.get_operation_display().lower()} "
                "never learnt its answer, so Registrar has no id to remove, and the IdP offers no listing to find "
                f"it by. Look at the IdP for a client with registrar_id/software_id {client.registration_id}, "
                "delete it there, then mark this change resolved."
            )
    if not journal_start(entry, claim.worker):
        return Transient("the lease on this entry was lost before the call", reached_idp=False)
    try:
        result = push_entry(connector, claim, operation, client, may_recreate=blind_retry or not unsure)
    except AccessDenied as exc:
        if operation in (OutboxOperation.DELETE, OutboxOperation.DISABLE) and unsure:
            # Our own earlier delete, whose answer was lost, is what the IdP answers for: the token was
            # good until that call (its last answer was stored), and only the delete could end it since.
            result = IdpResult(
                push=None,
                gone=True,
                note="gone: an earlier attempt's delete went unanswered and the IdP now refuses its token",
            )
        else:
            journal_clear(entry, claim.worker)
            if operation == OutboxOperation.UPDATE and unsure:
                exc.message += (
                    "; an earlier update's answer was lost, and an IdP that rotates the registration access token "
                    "on every update (RFC 7592) refuses the old one after it: Registrar can no longer manage this "
                    "client there. Delete it at the IdP, then retire or revoke it here and mark that change resolved"
                )
            return exc
    except Transient as exc:
        if not exc.reached_idp:
            journal_clear(entry, claim.worker)
        elif creates and not blind_retry:
            return _unconfirmed_create(claim, cause=str(exc))
        return exc
    except Unconfirmed as exc:
        return exc
    except ConnectorError as exc:  # the IdP answered and refused: nothing happened there
        journal_clear(entry, claim.worker)
        return exc
    except Exception as exc:  # an answer we could not use: it may have taken effect
        return exc
    journal_land(entry, claim.worker, idp_fields(entry, client, result))
    return result


def _unconfirmed_create(claim: Claim, *, cause: str) -> Unconfirmed:
    entry, client = claim.entry, claim.entry.client
    return Unconfirmed(
        f"IdP {entry.idp.name!r} may have created this client without Registrar learning its answer ({cause}), "
        "and it offers no listing to check. Registrar does not create it again by itself: that could leave a "
        f"duplicate nobody can find. Look at the IdP for a client with registrar_id/software_id "
        f"{client.registration_id}; delete it there if present, then Retry. (An admin can let Registrar retry "
        'such creates itself, accepting that risk: the IdP connection\'s config "recreate_unconfirmed": true.)'
    )
