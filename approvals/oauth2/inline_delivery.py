"""Inline delivery on the 201 path: an auto-approved client is created at its IdP before the answer is sent."""

from __future__ import annotations

import logging

from django.conf import settings

from inventory.models import Client
from inventory.outbox import outbox_nudge
from inventory.outbox.deliver import deliver_client_outbox_inline
from portal.logs import log_event

logger = logging.getLogger(__name__)


def deliver_inline(client: Client) -> bool:
    """Create ``client`` at its IdP now, with the workers' own delivery code, bounded by
    REGISTRAR_INLINE_DELIVERY_TIMEOUT; True once it is active there.

    Any failure or timeout means "not yet": the outbox entry stays due, a worker is nudged to finish the job and
    the agent (answered 202) polls.
    """
    try:
        delivered = bool(deliver_client_outbox_inline(client.pk, timeout=settings.REGISTRAR_INLINE_DELIVERY_TIMEOUT))
    except Exception:  # noqa: BLE001 - see docstring
        log_event(logger, "inline_delivery_failed", level=logging.WARNING, client=client.registration_id, exc_info=True)
        delivered = False
    if not delivered:
        outbox_nudge(client_id=client.pk)  # a worker takes over now, not at the next periodic requeue
        return False
    client.refresh_from_db(fields=["idp_client_id", "state", "activated_at", "state_changed_at"])
    return True
