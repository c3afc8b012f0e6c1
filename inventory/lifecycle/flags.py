"""Flags the sweeps set (orphaned, stale) and what outbox delivery records when the IdP confirms a disable."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState
from inventory.models import Client
from portal.audit import Actor, audit_record


@transaction.atomic
def client_mark_orphaned(*, client: Client, actor: Actor, reason: str = "", now: dt.datetime | None = None) -> bool:
    """Flag a live client whose owner left. Conditional update: False when it was already flagged."""
    now = now or timezone.now()
    done = Client.objects.filter(pk=client.pk, orphaned_at__isnull=True, state__in=LIVE_STATES).update(orphaned_at=now)
    if done:
        audit_record(
            actor=actor,
            action="client.orphaned",
            object_type="client",
            object_id=client.registration_id,
            before={"owner": client.owner_id},
            after={"orphaned_at": now},
            reason=reason,
        )
        client.orphaned_at = now
    return bool(done)


@transaction.atomic
def client_flag_stale(*, client: Client, actor: Actor, reason: str = "", now: dt.datetime | None = None) -> bool:
    """Flag an active client that has not been used for a while. False when it was already flagged."""
    now = now or timezone.now()
    done = Client.objects.filter(pk=client.pk, stale_at__isnull=True, state=ClientState.ACTIVE).update(stale_at=now)
    if done:
        audit_record(
            actor=actor,
            action="client.stale",
            object_type="client",
            object_id=client.registration_id,
            before={"last_used_at": client.last_used_at},
            after={"stale_at": now},
            reason=reason,
        )
        client.stale_at = now
    return bool(done)


def client_record_idp_disabled(client_id: int, at: dt.datetime) -> None:
    """Called by outbox delivery when the IdP confirms a disable/delete: record the expiry overshoot.

    Overshoot = IdP confirmation time − ``expires_at``, only for clients that ended by expiring, and
    only the first confirmation counts (a conditional update, so re-deliveries are harmless).
    """
    Client.objects.filter(pk=client_id, idp_disabled_at__isnull=True).update(idp_disabled_at=at)
    client = (
        Client.objects.filter(
            pk=client_id, state=ClientState.EXPIRED, expiry_overshoot_seconds__isnull=True, expires_at__isnull=False
        )
        .only("expires_at")
        .first()
    )
    if client is not None:
        overshoot = max(0.0, (at - client.expires_at).total_seconds())
        Client.objects.filter(pk=client_id, expiry_overshoot_seconds__isnull=True).update(
            expiry_overshoot_seconds=overshoot
        )
