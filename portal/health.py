"""Readiness checks for ``/readyz``: which dependencies answer, and how far behind the background work is.

Each check returns a :class:`Check`; ``REGISTRAR_READYZ_REQUIRED`` names those whose failure makes the answer
503 (by default the database, the cache and the broker); the others report (``warn``/``fail``) without taking
the process out of a load balancer, because Registrar keeps serving when they are down — a slow IdP means
202s, a backlog is worked off by the outbox. The kernel registers the checks it can make itself (database,
cache, broker, worker heartbeats); apps register theirs in ``AppConfig.ready()`` (inventory: IdPs, outbox)
with :func:`register`, so ``portal`` imports no app.

Every check is bounded by ``REGISTRAR_READYZ_TIMEOUT_SECONDS`` at the socket level, and error texts are cut
down to the exception's type and message with any URL credentials removed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    status: str
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    elapsed_ms: float = 0.0

    def as_dict(self, *, required: bool, detailed: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "required": required}
        if detailed:
            body["elapsed_ms"] = round(self.elapsed_ms, 1)
            body.update(self.details)
            if self.error:
                body["error"] = self.error
        return body


# A provider returns one or more named checks (the IdP provider returns one per connection).
Provider = Callable[[], dict[str, Check]]
_PROVIDERS: dict[str, Provider] = {}


def register(key: str, provider: Provider) -> None:
    """Add (or replace, by ``key``) a provider of checks."""
    _PROVIDERS[key] = provider


def single(name: str, fn: Callable[[], Check]) -> Provider:
    """A provider of one check named ``name``, timed, with an unexpected exception turned into ``fail``."""

    def provider() -> dict[str, Check]:
        return {name: timed(fn)}

    return provider


def timed(fn: Callable[[], Check]) -> Check:
    started = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a failing dependency is the answer, not an error
        result = Check(FAIL, error=describe(exc))
    result.elapsed_ms = (time.monotonic() - started) * 1000
    return result


_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return _URL_CREDENTIALS.sub(r"\1***@", text)[:300]


def run_checks() -> tuple[bool, dict[str, tuple[Check, bool]]]:
    """Run every check; ``(ready, {name: (check, required)})``. A required check nobody registered fails."""
    results: dict[str, Check] = {}
    for provider in list(_PROVIDERS.values()):
        try:
            results.update(provider())
        except Exception as exc:  # noqa: BLE001 - one broken provider must not hide the others
            results[f"provider:{getattr(provider, '__name__', 'unknown')}"] = Check(FAIL, error=describe(exc))
    required = set(settings.REGISTRAR_READYZ_REQUIRED)
    for name in required - results.keys():
        results[name] = Check(FAIL, error="required by REGISTRAR_READYZ_REQUIRED, but no such check exists")
    ready = all(results[name].status != FAIL for name in required)
    return ready, {name: (results[name], name in required) for name in sorted(results)}


# --- the kernel's own checks ---------------------------------------------------------------------------------


def _timeout() -> float:
    return float(settings.REGISTRAR_READYZ_TIMEOUT_SECONDS)


def check_database() -> Check:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return Check(OK, {"vendor": connection.vendor})


def check_cache() -> Check:
    """Redis: PING on a short-timeout connection of our own (the cache's pool has no timeout to lean on);
    any other backend: a set/get round trip."""
    config = settings.CACHES["default"]
    backend = config["BACKEND"]
    if backend.endswith("RedisCache"):
        import redis

        location = config["LOCATION"]
        url = location[0] if isinstance(location, list | tuple) else str(location).split(",")[0]
        client = redis.Redis.from_url(url, socket_timeout=_timeout(), socket_connect_timeout=_timeout())
        try:
            client.ping()
        finally:
            client.close()
        return Check(OK, {"backend": "redis"})
    from django.core.cache import cache

    key = f"registrar:readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", 10)
    found = cache.get(key)
    cache.delete(key)
    if found != "1":
        return Check(FAIL, {"backend": backend.rsplit(".", 1)[-1]}, error="the cache did not return what was stored")
    return Check(OK, {"backend": backend.rsplit(".", 1)[-1]})


def check_broker() -> Check:
    """Connect to the configured broker (``CELERY_BROKER_URL``) with a short timeout, the way a producer would."""
    from kombu import Connection

    url = settings.CELERY_BROKER_URL
    options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {})
    timeout = _timeout()
    options.setdefault("socket_timeout", timeout)
    options.setdefault("socket_connect_timeout", timeout)
    with Connection(url, connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        transport = conn.transport_cls
    return Check(OK, {"transport": str(transport)})


def check_workers() -> Check:
    """Each queue in REGISTRAR_HEARTBEAT_QUEUES had a heartbeat within three intervals (beat + broker + worker)."""
    from django.utils import timezone

    from portal.heartbeats import QUEUE_PREFIX, heartbeats_by_prefix

    now = timezone.now()
    limit = 3 * settings.REGISTRAR_HEARTBEAT_SECONDS
    beats = heartbeats_by_prefix(QUEUE_PREFIX)
    queues: dict[str, Any] = {}
    stale = []
    for queue in settings.REGISTRAR_HEARTBEAT_QUEUES:
        beat = beats.get(queue)
        age = (now - beat.beat_at).total_seconds() if beat else None
        queues[queue] = {"last_seen_seconds": None if age is None else round(age, 1), "host": beat.host if beat else ""}
        if age is None or age > limit:
            stale.append(queue)
    if stale:
        return Check(WARN, {"queues": queues}, error=f"no heartbeat within {limit} s from: {', '.join(stale)}")
    return Check(OK, {"queues": queues})


register("database", single("database", check_database))
register("cache", single("cache", check_cache))
register("broker", single("broker", check_broker))
register("workers", single("workers", check_workers))


# A sealing backlog is reported, never failed on: intake and people never wait for the sequencer.
SEAL_LAG_WARN_SECONDS = 10.0


def check_audit_log() -> Check:
    """The audit log's seal lag: how long the oldest event has waited for the sequencer (portal.tlog)."""
    from portal.tlog.sequencer import seal_lag_seconds

    lag = seal_lag_seconds()
    return Check(
        OK if lag <= SEAL_LAG_WARN_SECONDS else WARN,
        details={"seal_lag_seconds": round(lag, 3), "warn_after_seconds": SEAL_LAG_WARN_SECONDS},
    )


register("audit_log", single("audit_log", check_audit_log))
