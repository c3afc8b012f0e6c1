"""The outbox's knobs (``REGISTRAR_OUTBOX_*`` in ``portal.settings``), read at call time so tests can change them."""

from __future__ import annotations

from django.conf import settings

#: Connector timeout when ``REGISTRAR_CONNECTOR_TIMEOUT_SECONDS`` is not set.
DEFAULT_CONNECTOR_TIMEOUT = 10.0

# How many heads one UPDATE leases. Leasing costs a commit, so bigger chunks are cheaper; safety does not
# depend on the size (see leases.lease_has_room). The price of a big chunk: a worker killed mid-chunk leaves that
# many entries leased until REGISTRAR_OUTBOX_LEASE_SECONDS runs out, then requeue_outbox hands them out.
CLAIM_CHUNK = 25
#: Spare time, besides two full connector timeouts, that a lease must have left before an IdP call starts.
LEASE_MARGIN_SECONDS = 2.0


def setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def lease_seconds() -> float:
    return setting("REGISTRAR_OUTBOX_LEASE_SECONDS", 120.0)


def max_attempts() -> int:
    return int(setting("REGISTRAR_OUTBOX_MAX_ATTEMPTS", 8))


def parallel_calls() -> int:
    return max(1, int(setting("REGISTRAR_OUTBOX_PARALLEL_CALLS", 4)))


def connector_timeout(timeout: float | None = None) -> float:
    """``timeout`` if given, else the configured connector timeout (seconds per HTTP request)."""
    return timeout or setting("REGISTRAR_CONNECTOR_TIMEOUT_SECONDS", DEFAULT_CONNECTOR_TIMEOUT)
