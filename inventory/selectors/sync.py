"""Dead-lettered IdP changes (the sync failures page and ``/api/v1/sync-failures/``): each with its error,
censored of the IdP's secrets, and what a person should do about it."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from inventory.choices import OutboxOperation, OutboxStatus
from inventory.models import OutboxEntry
from portal.censor import censor

# What a person should do, by the error's type (the stored text starts with it).
HINTS = {
    "AccessDenied": "The IdP refused Registrar's management token and cannot say whether the client still "
    "exists. Check the IdP: delete the client there if it is still present, then mark this "
    "change resolved.",
    "Unconfirmed": "An earlier call may have taken effect at the IdP without Registrar learning its answer, and "
    "the IdP cannot list its clients. Check the IdP for a client carrying this registration id "
    "and delete it there; then Retry (a create) or mark resolved (a delete).",
}


def dead_letters() -> QuerySet[OutboxEntry]:
    """Dead-lettered outbox entries, newest first."""
    return (
        OutboxEntry.objects.filter(status=OutboxStatus.DEAD)
        .select_related("client", "idp")
        .order_by("-next_attempt_at", "-id")
    )


@dataclass
class SyncFailure:
    entry: OutboxEntry
    error: str
    hint: str
    resolvable: bool


def sync_failure_rows(entries) -> list[SyncFailure]:
    """One row per entry (a page of :func:`dead_letters`)."""
    secrets_by_idp: dict[int, list[str]] = {}
    rows = []
    for entry in entries:
        if entry.idp_id not in secrets_by_idp:
            secrets_by_idp[entry.idp_id] = [v for v in (entry.idp.secrets or {}).values() if isinstance(v, str)]
        rows.append(
            SyncFailure(
                entry=entry,
                error=censor(entry.last_error, secret_values=secrets_by_idp[entry.idp_id]),
                hint=HINTS.get(entry.last_error.partition(":")[0], ""),
                resolvable=entry.operation in (OutboxOperation.DISABLE, OutboxOperation.DELETE),
            )
        )
    return rows
