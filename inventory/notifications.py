"""E-mail to people about their clients: expiry reminders, orphans, owner succession (the
inactivity rule mails through ``inventory.lifecycle_policies.enforce``).

Owners get at most ONE digest per kind per day, however many clients it lists: the ``OwnerDigest``
row (unique per user, kind, day) is written in the same transaction as the send, so a task that runs
twice (a retry, two beat instances) does not mail twice. Backend: console in the demo, SMTP from
settings in production (``EMAIL_*``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from inventory.choices import ClientState
from inventory.models import Client, OwnerDigest
from portal.logs import log_event

logger = logging.getLogger(__name__)


def _link(name: str) -> str:
    return settings.REGISTRAR_PUBLIC_URL + reverse(name)


def _line(client: Client, now: dt.datetime) -> str:
    left = ""
    if client.expires_at:
        hours = max(0, int((client.expires_at - now).total_seconds() // 3600))
        left = f" — expires {client.expires_at:%Y-%m-%d %H:%M} UTC (in {hours // 24} d {hours % 24} h)"
    return f"  • {client.name} ({client.registration_id}, {client.risk_tier} tier){left}"


def _send_digest(
    *,
    user,
    kind: str,
    day: dt.date,
    subject: str,
    body: str,
    count: int,
    mark: list[tuple[int, dt.datetime | None]] | None = None,
) -> bool:
    """Send once per (user, kind, day). Returns False when today's digest already went out.

    ``mark``: (client id, expiry) pairs recorded as reminded in the same transaction, only if their expiry is still
    the one the digest names (a renewal meanwhile makes the next reminder due)."""
    if not user.email:
        return False
    try:
        with transaction.atomic():
            OwnerDigest.objects.create(user=user, kind=kind, day=day, client_count=count)
            for pk, expires_at in mark or []:
                Client.objects.filter(pk=pk, expires_at=expires_at).update(expiry_reminded_for=expires_at)
            send_mail(subject, body, None, [user.email])
    except IntegrityError:
        return False
    log_event(logger, "digest_sent", kind=kind, user_id=user.pk, clients=count)
    return True


def reminder_lead(client: Client) -> dt.timedelta:
    """How long before ``expires_at`` the owner is reminded: when ``REGISTRAR_EXPIRY_REMINDER_PERCENT`` of the
    client's lifetime is left or ``REGISTRAR_EXPIRY_REMINDER_HOURS`` before it ends, whichever is later.

    The lifetime is the approved lifetime per renewal (``ceiling_ttl_seconds``), else the span from activation
    (or creation) to expiry. A 24 h client is reminded 4.8 h before it ends, a 90-day one a day before."""
    assert client.expires_at is not None
    if client.ceiling_ttl_seconds:
        lifetime = dt.timedelta(seconds=client.ceiling_ttl_seconds)
    else:
        lifetime = client.expires_at - (client.activated_at or client.created_at)
    share = max(lifetime, dt.timedelta(0)) * settings.REGISTRAR_EXPIRY_REMINDER_PERCENT / 100
    return min(share, dt.timedelta(hours=settings.REGISTRAR_EXPIRY_REMINDER_HOURS))


def _end_of_day(now: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def expiring_clients(*, now: dt.datetime) -> list[Client]:
    """Active clients of active owners whose reminder moment falls before the end of this (UTC) day and who were
    not yet reminded of their current expiry. Indexed on (state, expires_at): only clients ending within a day
    plus ``REGISTRAR_EXPIRY_REMINDER_HOURS`` are read."""
    end = _end_of_day(now)
    candidates = (
        Client.objects.filter(
            state=ClientState.ACTIVE,
            owner__is_active=True,
            expires_at__gt=now,
            expires_at__lt=end + dt.timedelta(hours=settings.REGISTRAR_EXPIRY_REMINDER_HOURS),
        )
        .filter(Q(expiry_reminded_for__isnull=True) | ~Q(expiry_reminded_for=F("expires_at")))
        .select_related("owner")
        .order_by("owner_id", "expires_at")
    )
    return [c for c in candidates if c.expires_at is not None and c.expires_at - reminder_lead(c) < end]


def notify_expiring(*, now: dt.datetime | None = None) -> int:
    """Expiry reminders, one digest per owner per day (the beat runs this hourly).

    An owner's digest goes out on the first run at which one of their clients has reached its reminder moment
    (:func:`reminder_lead`); it lists every client whose moment falls before the end of that UTC day, so the day
    needs no second mail. Each listed client is marked (``expiry_reminded_for``) in the digest's transaction and
    not listed again for the same expiry; a renewal makes the next reminder due. Running twice sends once."""
    now = now or timezone.now()
    by_owner: dict[int | None, list[Client]] = defaultdict(list)
    for client in expiring_clients(now=now):
        by_owner[client.owner_id].append(client)
    sent = 0
    for clients in by_owner.values():
        assert clients[0].owner is not None  # selected by owner__is_active
        if not any(c.expires_at is not None and c.expires_at - reminder_lead(c) <= now for c in clients):
            continue  # nothing due yet: a later run today sends the digest
        owner = clients[0].owner
        body = (
            f"Hello {owner.get_username()},\n\n"
            f"{len(clients)} of your clients expire soon. Renew the ones still needed; the rest will be "
            f"disabled at the identity provider when they expire.\n\n"
            + "\n".join(_line(c, now) for c in clients)
            + f"\n\nManage them: {_link('inventory:mine')}\n"
        )
        sent += _send_digest(
            user=owner,
            kind="expiry",
            day=now.date(),
            subject=f"[Registrar] {len(clients)} client(s) expire soon",
            body=body,
            count=len(clients),
            mark=[(c.pk, c.expires_at) for c in clients],
        )
    return sent


def orphan_recipients(client: Client) -> set[str]:
    """Who hears about an orphaned client: the team's address and manager, the former owner's manager."""
    recipients = set()
    if client.team is not None:
        if client.team.notify_email:
            recipients.add(client.team.notify_email)
        if client.team.manager is not None and client.team.manager.is_active and client.team.manager.email:
            recipients.add(client.team.manager.email)
    manager = client.owner.manager if client.owner is not None else None
    if manager is not None and manager.is_active and manager.email:
        recipients.add(manager.email)
    return recipients


def notify_orphans(*, client_ids: list[int], now: dt.datetime | None = None) -> int:
    """One mail per recipient listing the clients newly orphaned in this sweep run, with the deadlines."""
    now = now or timezone.now()
    grace = dt.timedelta(hours=settings.REGISTRAR_ORPHAN_GRACE_HOURS)
    by_recipient: dict[str, list[Client]] = defaultdict(list)
    clients = Client.objects.filter(pk__in=client_ids).select_related("team__manager", "owner__manager")
    for client in clients:
        for address in orphan_recipients(client):
            by_recipient[address].append(client)
    for address, items in by_recipient.items():
        body = (
            "The owner of these clients has left. A team member, the team manager or the owner's manager "
            f"can take them over. Unless someone does, they are suspended at the IdP after "
            f"{settings.REGISTRAR_ORPHAN_GRACE_HOURS} h (around {now + grace:%Y-%m-%d %H:%M} UTC) and retired "
            f"{settings.REGISTRAR_ORPHAN_RETIRE_DAYS} days later.\n\n"
            + "\n".join(
                f"{_line(c, now)} — former owner {c.owner.get_username() if c.owner else 'unknown'}" for c in items
            )
            + f"\n\nTake them over: {_link('inventory:orphans')}\n"
        )
        send_mail(f"[Registrar] {len(items)} orphaned client(s) need a new owner", body, None, [address])
    log_event(logger, "orphan_notified", recipients=len(by_recipient), clients=len(client_ids))
    return len(by_recipient)


def notify_successors(*, client_ids: list[int], now: dt.datetime | None = None) -> int:
    """Co-sponsors who just became owners because the owner left: one mail each, listing those clients."""
    now = now or timezone.now()
    by_owner: dict[int, list[Client]] = defaultdict(list)
    for client in Client.objects.filter(pk__in=client_ids, owner__is_active=True).select_related("owner"):
        by_owner[client.owner_id].append(client)
    sent = 0
    for clients in by_owner.values():
        owner = clients[0].owner
        assert owner is not None  # selected by owner__is_active
        if not owner.email:
            continue
        body = (
            f"Hello {owner.get_username()},\n\nThe owner of these clients has left. You co-sponsored them, so "
            "they are yours now: renew, attest or retire them as their owner. Invite a new co-sponsor if the "
            "policy asks for two.\n\n"
            + "\n".join(_line(c, now) for c in clients)
            + f"\n\nManage them: {_link('inventory:mine')}\n"
        )
        send_mail(f"[Registrar] you now own {len(clients)} client(s) you co-sponsored", body, None, [owner.email])
        sent += 1
    log_event(logger, "successors_notified", owners=sent, clients=len(client_ids))
    return sent
