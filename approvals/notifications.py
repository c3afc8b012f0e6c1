"""Who hears about requests: approvers (batched e-mail), owners (on decision), an optional webhook.

Notifications are best-effort: every failure is logged and swallowed, so a broken mail server or
webhook never blocks or rolls back a decision. They run after commit (services) or in tasks.

Batching: an approver gets at most one "requests need you" mail per
``REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES``. The claim is ``cache.add`` (atomic in Redis and in
the local-memory cache), so two workers running the task at once cannot both mail the same person.
"""

from __future__ import annotations

import logging

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from approvals.models import RegistrationRequest
from portal.logs import log_event
from portal.roles import Role

log = logging.getLogger(__name__)

LAST_MAILED_KEY = "approvals:approver-mailed:{pk}"  # timestamp of the newest request already announced
CLAIM_KEY = "approvals:approver-claim:{pk}"  # held for the batching interval after a mail


def _absolute(path: str) -> str:
    return (settings.REGISTRAR_PUBLIC_URL or "") + path


def slack_post(text: str) -> bool:
    """Post to the Slack-compatible webhook if one is configured. Never raises."""
    url = settings.REGISTRAR_SLACK_WEBHOOK_URL
    if not url:
        return False
    try:
        response = httpx.post(url, json={"text": text}, timeout=5.0)
        response.raise_for_status()
        return True
    except Exception as exc:  # noqa: BLE001 - a notification must never break its caller
        log_event(log, "slack_webhook_failed", level=logging.WARNING, error=type(exc).__name__)
        return False


def approvers_queryset():
    user_model = get_user_model()
    return (
        user_model.objects.filter(is_active=True, is_service_account=False)
        .filter(Q(groups__name=Role.APPROVER))
        .exclude(email="")
        .distinct()
    )


def notify_approvers(*, now=None) -> int:
    """Mail each approver who has new requests awaiting them, at most once per interval. Returns mails sent."""
    now = now or timezone.now()
    interval = settings.REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES * 60
    sent = 0
    announced_any = False
    for approver in approvers_queryset():
        last = cache.get(LAST_MAILED_KEY.format(pk=approver.pk))
        waiting = RegistrationRequest.objects.awaiting_decision_by(approver)
        new = waiting.filter(created_at__gt=last) if last else waiting
        newest = new.order_by("-created_at").values_list("created_at", flat=True).first()
        if newest is None:
            continue
        if interval and not cache.add(CLAIM_KEY.format(pk=approver.pk), now.isoformat(), timeout=interval):
            continue  # mailed within the interval; the next run after it expires will batch these
        count = waiting.count()
        try:
            send_mail(
                subject=f"[Registrar] {count} registration request{'s' if count != 1 else ''} awaiting your decision",
                message=(
                    f"{count} registration request(s) are waiting for your review.\n\n"
                    f"Open the queue: {_absolute(reverse('approvals:queue'))}\n"
                ),
                from_email=None,
                recipient_list=[approver.email],
            )
        except Exception as exc:  # noqa: BLE001
            log_event(
                log, "approver_mail_failed", level=logging.WARNING, approver=approver.pk, error=type(exc).__name__
            )
            cache.delete(CLAIM_KEY.format(pk=approver.pk))
            continue
        cache.set(LAST_MAILED_KEY.format(pk=approver.pk), newest, timeout=None)
        sent += 1
        announced_any = True
    if announced_any:
        slack_post(f"Registrar: registration requests are waiting for review: {_absolute(reverse('approvals:queue'))}")
    return sent


def notify_owner_of_decision(request_pk: int) -> bool:
    """Tell the owner their request was approved or denied. Never raises."""
    try:
        req = RegistrationRequest.objects.select_related("owner").get(pk=request_pk)
        if not req.owner or not req.owner.email:
            return False
        subject = f"[Registrar] Your registration request {req.client_name or req.public_id} was {req.state}"
        body = (
            f"Request: {req.public_id}\nClient: {req.client_name}\nState: {req.state}\n"
            f"Reason: {req.decision_reason or '-'}\n\n"
            f"Your requests: {_absolute(reverse('approvals:mine'))}\n"
        )
        send_mail(subject=subject, message=body, from_email=None, recipient_list=[req.owner.email])
        slack_post(f"Registrar: request {req.public_id} ({req.client_name}) was {req.state}")
        return True
    except Exception as exc:  # noqa: BLE001
        log_event(log, "owner_mail_failed", level=logging.WARNING, request=request_pk, error=type(exc).__name__)
        return False
