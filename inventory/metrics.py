"""The inventory's figures for ``/metrics`` and its checks for ``/readyz`` (registered in ``InventoryConfig.ready``).

Scrape-time figures, each one or two indexed queries (see ``portal.metrics`` for why state is read from the
database at scrape time):

* the outbox: pending, due and dead-lettered entries, and the age of the oldest due entry — a backlog means
  an IdP is failing or the workers are not keeping up;
* the expiry sweep's lag: how long the most overdue live client has been past ``expires_at`` — the sweep
  runs every minute, so this stays under about a minute while beat and the workers are healthy;
* expiry overshoot over the last hour: from ``expires_at`` to the IdP confirming the disable.

Readiness: each enabled IdP connection's reachability (a short-timeout GET of its discovery document, the
result kept for ``REGISTRAR_READYZ_IDP_CACHE_SECONDS`` per process, so a storm of probes costs the IdP at most
one request per web process per interval) and the outbox's oldest due entry. Neither makes ``/readyz`` 503
unless named in ``REGISTRAR_READYZ_REQUIRED``: a down IdP means 202 answers and a backlog, not an outage.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Iterable
from dataclasses import replace

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from inventory.choices import ClientState, OutboxStatus
from inventory.models import Client, IdPConnection, OutboxEntry
from portal import health
from portal.metrics import gauge

OVERSHOOT_WINDOW = dt.timedelta(hours=1)


# --- metrics ------------------------------------------------------------------------------------------------


def _age(now: dt.datetime, since: dt.datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def outbox_figures(now: dt.datetime) -> dict[str, float]:
    pending = OutboxEntry.objects.filter(status=OutboxStatus.PENDING).aggregate(
        pending=Count("pk"),
        due=Count("pk", filter=Q(next_attempt_at__lte=now)),
        oldest_due=Min("next_attempt_at", filter=Q(next_attempt_at__lte=now)),
    )
    return {
        "pending": pending["pending"],
        "due": pending["due"],
        "dead": OutboxEntry.objects.filter(status=OutboxStatus.DEAD).count(),
        "oldest_due_age": _age(now, pending["oldest_due"]),
    }


def collect_outbox(now: dt.datetime) -> Iterable:
    figures = outbox_figures(now)
    entries = gauge(
        "registrar_outbox_entries",
        "Outbox entries waiting for an IdP, by status (pending, due: "
        "pending and due now, dead: dead-lettered, waiting for an admin's retry).",
        labels=["status"],
    )
    for status in ("pending", "due", "dead"):
        entries.add_metric([status], figures[status])
    yield entries
    yield gauge(
        "registrar_outbox_oldest_due_age_seconds",
        "How long the oldest due outbox entry has been due (0 when none is).",
        figures["oldest_due_age"],
    )


def collect_expiry(now: dt.datetime) -> Iterable:
    overdue = Client.objects.filter(
        state__in=[ClientState.ACTIVE, ClientState.SUSPENDED], expires_at__lte=now
    ).aggregate(count=Count("pk"), oldest=Min("expires_at"))
    yield gauge(
        "registrar_sweep_lag_seconds",
        "How long the most overdue live client has been past expires_at (0 when none is): the expiry sweep's lag.",
        _age(now, overdue["oldest"]),
    )
    yield gauge(
        "registrar_clients_overdue_for_expiry",
        "Live clients past expires_at, not yet expired by the sweep.",
        overdue["count"],
    )
    # Clients that expired in the window: index (state, expires_at); the overshoot is set once the IdP confirms.
    recent = list(
        Client.objects.filter(
            state=ClientState.EXPIRED, expires_at__gt=now - OVERSHOOT_WINDOW, expires_at__lte=now
        ).values_list("expiry_overshoot_seconds", flat=True)
    )
    confirmed = sorted(value for value in recent if value is not None)
    overshoot = gauge(
        "registrar_expiry_overshoot_seconds",
        "Expiry overshoot (expires_at to the IdP confirming the disable) of clients that expired in the "
        "last hour: p50, p99 and max.",
        labels=["stat"],
    )
    if confirmed:
        for stat, value in (
            ("p50", _quantile(confirmed, 0.5)),
            ("p99", _quantile(confirmed, 0.99)),
            ("max", confirmed[-1]),
        ):
            overshoot.add_metric([stat], value)
    yield overshoot
    expired = gauge(
        "registrar_expired_clients_last_hour",
        "Clients that expired in the last hour, by whether the IdP has confirmed the disable.",
        labels=["confirmed"],
    )
    expired.add_metric(["true"], len(confirmed))
    expired.add_metric(["false"], len(recent) - len(confirmed))
    yield expired


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending, non-empty list."""
    rank = max(1, -(-int(q * 1000) * len(ordered) // 1000))  # ceil(q * n) without float error
    return ordered[min(rank, len(ordered)) - 1]


# --- readiness ----------------------------------------------------------------------------------------------

_probe_lock = threading.Lock()
# IdP connection pk -> (fingerprint of kind/config/secrets, monotonic time checked, result)
_probe_results: dict[int, tuple[str, float, health.Check]] = {}


def _probe(idp: IdPConnection) -> health.Check:
    from inventory.outbox.push import connector_for

    connector = connector_for(idp, timeout=float(settings.REGISTRAR_READYZ_TIMEOUT_SECONDS))
    try:
        connector.probe()
    finally:
        connector.close()
    return health.Check(health.OK, {"kind": idp.kind})


def check_idps() -> dict[str, health.Check]:
    """One ``idp:<name>`` check per enabled connection, each result reused for REGISTRAR_READYZ_IDP_CACHE_SECONDS."""
    from inventory.outbox.push import ConnectorCache

    ttl = float(settings.REGISTRAR_READYZ_IDP_CACHE_SECONDS)
    results: dict[str, health.Check] = {}
    with _probe_lock:  # concurrent probes in one process wait for one IdP call instead of each making one
        for idp in IdPConnection.objects.filter(enabled=True).order_by("name"):
            fingerprint = ConnectorCache._fingerprint(idp)
            now = time.monotonic()
            cached = _probe_results.get(idp.pk)
            if cached is not None and cached[0] == fingerprint and now - cached[1] < ttl:
                check = replace(cached[2], details={**cached[2].details, "cached": True})
            else:
                check = health.timed(functools.partial(_probe, idp))
                check.details = {"kind": idp.kind, **check.details, "cached": False}
                _probe_results[idp.pk] = (fingerprint, now, check)
            results[f"idp:{idp.name}"] = check
    return results


def check_outbox() -> health.Check:
    figures = outbox_figures(timezone.now())
    details = {
        "oldest_due_seconds": round(figures["oldest_due_age"], 1),
        "due": figures["due"],
        "dead": figures["dead"],
    }
    limit = settings.REGISTRAR_OUTBOX_AGE_WARN_SECONDS
    if figures["oldest_due_age"] > limit:
        return health.Check(health.WARN, details, error=f"an outbox entry has been due for more than {limit} s")
    return health.Check(health.OK, details)


def register() -> None:
    from portal.metrics import register_collector

    register_collector("outbox", collect_outbox)
    register_collector("expiry", collect_expiry)
    health.register("idp", check_idps)
    health.register("outbox", health.single("outbox", check_outbox))
