"""Fixed-window rate limits on the registration endpoint, kept in Django's cache (Redis in production).

Two limits apply to ``/oauth2/register``: one per source address (checked first, before any database
work) and one per bearer credential (keyed by a hash of it, so the cache never holds a token). Rates are
``"<count>/<unit>"`` strings, unit ``s``, ``m``, ``h`` or ``d`` (``REGISTRAR_REGISTER_RATE_PER_*``).

Fixed windows are coarse (a burst at a window edge can reach twice the rate) but cost one cache round
trip (``incr``, plus an ``add`` once per window), which matters on an endpoint meant to take hundreds of requests a second.
If the cache is down the request is let through: registration still has every other control, and an
outage of the limiter must not become an outage of intake.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.core.cache import cache

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(rate: str) -> Rate | None:
    """``"120/m"`` → Rate(120, 60); empty or ``"0"`` disables the limit (None)."""
    if not rate or rate.strip() in ("0", "off", "none"):
        return None
    count, _, unit = rate.strip().partition("/")
    try:
        return Rate(int(count), _UNITS[unit.strip().lower() or "s"])
    except (ValueError, KeyError):
        raise ValueError(f"rate {rate!r} must look like 120/m (units s, m, h, d)")


@dataclass(frozen=True)
class Limited:
    """The limit that was hit and how long until its window resets."""

    scope: str
    retry_after: int


def hit(scope: str, ident: str, rate: str) -> Limited | None:
    """Count one request for ``ident`` under ``scope``; return Limited if it is over ``rate``."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    now = time.time()
    window = int(now // parsed.seconds)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
    key = f"rl:{scope}:{digest}:{window}"
    try:
        # One round trip in the common case: incr() is atomic in Redis and locmem and raises ValueError
        # when the window's key does not exist yet; then add() creates it (or loses a race and we incr).
        try:
            count = cache.incr(key)
        except ValueError:
            count = 1 if cache.add(key, 1, timeout=parsed.seconds + 1) else cache.incr(key)
    except Exception:  # noqa: BLE001 - the limiter failing open is a deliberate choice (module docstring)
        logger.warning("event=ratelimit_unavailable scope=%s", scope)
        return None
    if count > parsed.count:
        retry_after = max(1, math.ceil((window + 1) * parsed.seconds - now))
        return Limited(scope=scope, retry_after=retry_after)
    return None
