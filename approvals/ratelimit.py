"""Fixed-window rate limits on the registration endpoints, kept in Django's cache (Redis in production).

Two limits apply to ``/oauth2/register``: one per source address and one per bearer credential (keyed by a
hash of it, so the cache never holds a token). Rates are ``"<count>/<unit>"`` strings, unit ``s``, ``m``,
``h`` or ``d`` (``REGISTRAR_REGISTER_RATE_PER_*``).

Fixed windows are coarse (a burst at a window edge can reach twice the rate) but cheap, which matters on an
endpoint meant to take hundreds of requests a second:

- with Redis (production) every limit of a request is counted in **one round trip**, one Lua script
  (``INCR``, and ``EXPIRE`` on a new key) on a client kept per process. Django's ``cache.incr`` costs two round
  trips per key (``EXISTS`` then ``INCRBY``) and builds a new redis-py client on every call, which measured
  ~1 ms of CPU per registration;
- with any other cache (tests, the SQLite demo) ``cache.incr`` / ``cache.add`` per key.

If the cache is down the request is let through: registration still has every other control, and an
outage of the limiter must not become an outage of intake.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.dispatch import receiver

from portal.logs import log_event

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"


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


# --- the Redis client (one per process; redis-py's pool reconnects after a fork) -------------------------

# Every key of a request in one command: INCR, and EXPIRE when the window's key is new. Atomic, and one
# command and one reply instead of a pipeline of two per key (redis-py's per-command overhead — its
# argument checks on EXPIRE alone — cost more CPU than the round trip).
_COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  counts[i] = n
end
return counts
"""

_client: tuple[int, object] | None = None


def _redis():
    """The counting script (see _COUNT_SCRIPT) on a redis-py client for the default cache's server, or None
    when the cache is not Redis."""
    global _client
    config = settings.CACHES.get("default", {})
    if config.get("BACKEND") != _REDIS_BACKEND:
        return None
    if _client is None or _client[0] != os.getpid():
        import redis

        location = config["LOCATION"]
        location = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
        client = redis.Redis.from_url(location, socket_timeout=1.0, socket_connect_timeout=1.0)
        _client = (os.getpid(), client.register_script(_COUNT_SCRIPT))  # EVALSHA; loaded on the first NOSCRIPT
    return _client[1]


@receiver(setting_changed)
def _forget_client(*, setting, **kwargs) -> None:
    global _client
    if setting == "CACHES":
        _client = None


# --- counting --------------------------------------------------------------------------------------------


def _counts_redis(script, keys: list[tuple[str, int]]) -> list[int]:
    return [int(n) for n in script(keys=[key for key, _ in keys], args=[ttl for _, ttl in keys])]


def _counts_cache(keys: list[tuple[str, int]]) -> list[int]:
    counts = []
    for key, ttl in keys:
        # incr() is atomic in Redis and locmem and raises ValueError when the window's key does not exist
        # yet; then add() creates it (or loses a race and we incr).
        try:
            counts.append(cache.incr(key))
        except ValueError:
            counts.append(1 if cache.add(key, 1, timeout=ttl) else cache.incr(key))
    return counts


def check(*limits: tuple[str, str, str]) -> Limited | None:
    """Count one request against each ``(scope, ident, rate)``; return the first limit it is over, if any.

    Every limit is counted even when an earlier one is already over (a refused request is still an attempt).
    """
    now = time.time()
    windows: list[tuple[str, Rate, int, str]] = []
    for scope, ident, rate in limits:
        parsed = parse_rate(rate)
        if parsed is None:
            continue
        window = int(now // parsed.seconds)
        digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
        windows.append((scope, parsed, window, f"rl:{scope}:{digest}:{window}"))
    if not windows:
        return None
    keys = [(key, parsed.seconds + 1) for _, parsed, _, key in windows]
    try:
        script = _redis()
        counts = _counts_redis(script, keys) if script is not None else _counts_cache(keys)
    except Exception:  # noqa: BLE001 - the limiter failing open is a deliberate choice (module docstring)
        log_event(logger, "ratelimit_unavailable", level=logging.WARNING, scopes=",".join(w[0] for w in windows))
        return None
    for (scope, parsed, window, _), count in zip(windows, counts, strict=True):
        if count > parsed.count:
            retry_after = max(1, math.ceil((window + 1) * parsed.seconds - now))
            return Limited(scope=scope, retry_after=retry_after)
    return None
