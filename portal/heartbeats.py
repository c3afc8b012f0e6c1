"""Heartbeats of the background machinery: writing one, and reading them back for /readyz and /metrics.

A heartbeat is telemetry, not a change to anything Registrar governs, so it writes no audit event (one every
few seconds would drown the trail) and overwrites its row in place.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.utils import timezone

from portal.models import Heartbeat

QUEUE_PREFIX = "queue:"
SWEEP_PREFIX = "sweep:"


def heartbeat_record(
    *,
    name: str,
    at: datetime | None = None,
    duration_seconds: float | None = None,
    delay_seconds: float | None = None,
    host: str | None = None,
) -> None:
    """Record that ``name`` ran (at ``at``, default now), overwriting its previous beat."""
    Heartbeat.objects.update_or_create(
        name=name[:64],
        defaults={
            "beat_at": at or timezone.now(),
            "duration_seconds": duration_seconds,
            "delay_seconds": delay_seconds,
            "host": (host if host is not None else socket.gethostname())[:255],
        },
    )


@contextmanager
def heartbeat_timed(name: str) -> Iterator[None]:
    """Record ``name`` with the block's duration once the block finishes without an exception."""
    started = time.monotonic()
    yield
    heartbeat_record(name=name, duration_seconds=time.monotonic() - started)


def heartbeats_by_prefix(prefix: str) -> dict[str, Heartbeat]:
    """The heartbeats whose name starts with ``prefix``, keyed by the rest of the name (``queue:celery`` → ``celery``)."""
    return {hb.name.removeprefix(prefix): hb for hb in Heartbeat.objects.filter(name__startswith=prefix)}
