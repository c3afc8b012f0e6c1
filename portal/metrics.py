"""Prometheus metrics: what ``/metrics`` serves, and how the numbers are gathered across processes.

Two kinds of numbers, gathered two ways (prometheus-client, no django-prometheus: Registrar needs its own
domain figures and a protected endpoint, not per-view request histograms, which the proxy measures better):

* **State** — queue depth, outbox backlog, sweep lag, heartbeats — is computed from the database when
  Prometheus scrapes, by collectors the apps register here (:func:`register_collector`). Every web process
  and every replica gives the same answer, and nothing is lost when a process restarts.
* **Events** — registrations by outcome, IdP calls and their latency — are counters and histograms the code
  increments where the event happens. Under gunicorn each worker is its own process, so prometheus-client's
  multiprocess mode is used whenever ``PROMETHEUS_MULTIPROC_DIR`` is set (``contrib/gunicorn.conf.py`` sets
  and empties it at start): each process writes its values to a file there and a scrape adds them up. A
  Celery worker counts its own events (IdP calls from the outbox) and serves them on its own port
  (``REGISTRAR_WORKER_METRICS_PORT``, :func:`serve_worker_metrics`), with its own directory.

A collector that fails (database down) is reported as ``registrar_collector_up{collector=...} 0`` instead
of failing the scrape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from django.core.exceptions import ImproperlyConfigured
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portal.logs import log_event

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# name -> function(now) yielding metric families, evaluated at scrape time.
_COLLECTORS: dict[str, Callable[..., Iterable[Metric]]] = {}


def register_collector(name: str, collect: Callable[..., Iterable[Metric]]) -> None:
    """Add (or replace) a scrape-time collector; ``collect(now)`` yields prometheus metric families."""
    _COLLECTORS[name] = collect


def gauge(
    name: str, documentation: str, value: float | None = None, *, labels: Iterable[str] = ()
) -> GaugeMetricFamily:
    """A gauge family for a collector (``value`` for an unlabelled one, else ``.add_metric(labels, value)``)."""
    return GaugeMetricFamily(name, documentation, value=value, labels=None if value is not None else list(labels))


class _ScrapeTimeCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        from django.utils import timezone

        now = timezone.now()
        up = gauge(
            "registrar_collector_up",
            "1 when the collector could read its figures at this scrape.",
            labels=["collector"],
        )
        for name, collect in list(_COLLECTORS.items()):
            try:
                families = list(collect(now))
            except Exception:  # noqa: BLE001 - one unreadable figure must not hide the others
                log_event(logger, "metrics_collector_failed", level=logging.WARNING, collector=name, exc_info=True)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


class _ThisProcess(Collector):
    """The default registry's metrics (single-process mode: runserver, the embedded demo, tests)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _event_collector() -> Collector:
    if multiprocess_dir():
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)
        return registry
    return _ThisProcess()


def exposition() -> bytes:
    """The text exposition for one scrape: events from every process of this server, state from the database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_event_collector())
    registry.register(_ScrapeTimeCollector())
    return generate_latest(registry)


def serve_worker_metrics(*, port: int, addr: str) -> None:
    """Serve a Celery worker's event metrics (its pool's processes) on ``addr:port`` from its main process.

    A prefork pool runs tasks in child processes, so this needs multiprocess mode: the unit or container sets
    ``PROMETHEUS_MULTIPROC_DIR`` to a directory of the worker's own, which is emptied here, before the pool
    starts. No database figures here: the web server's /metrics has those.
    """
    from prometheus_client import start_http_server

    directory = multiprocess_dir()
    if not directory:
        raise ImproperlyConfigured(
            "REGISTRAR_WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR set to a directory of this worker's own "
            "(its pool processes write their counters there)"
        )
    clear_multiprocess_dir(directory)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_event_collector())
    start_http_server(port, addr=addr, registry=registry)
    log_event(logger, "worker_metrics_listening", addr=addr, port=port)


def clear_multiprocess_dir(directory: str) -> None:
    """Empty a multiprocess directory before the processes that write there start (stale pids' files would
    otherwise be added to the new ones')."""
    os.makedirs(directory, exist_ok=True)
    for entry in os.scandir(directory):
        if entry.is_file() and entry.name.endswith(".db"):
            os.unlink(entry.path)


# --- the kernel's own figures: heartbeats ----------------------------------------------------------------------


def collect_heartbeats(now) -> Iterable[Metric]:
    """Per worker queue: when a worker last ran beat's heartbeat and how long it waited in the queue; per
    periodic sweep: when it last finished and how long it took."""
    from django.conf import settings

    from portal.heartbeats import QUEUE_PREFIX, SWEEP_PREFIX
    from portal.models import Heartbeat

    beats = {hb.name: hb for hb in Heartbeat.objects.all()}
    seen = gauge(
        "registrar_worker_heartbeat_timestamp_seconds",
        "Unix time a worker last ran the heartbeat beat sent to this queue.",
        labels=["queue"],
    )
    age = gauge(
        "registrar_worker_heartbeat_age_seconds",
        "Seconds since a worker last ran this queue's heartbeat (+Inf: never).",
        labels=["queue"],
    )
    delay = gauge(
        "registrar_worker_queue_delay_seconds",
        "How long the last heartbeat waited in this queue before a worker ran it.",
        labels=["queue"],
    )
    queues = sorted(
        set(settings.REGISTRAR_HEARTBEAT_QUEUES)
        | {name.removeprefix(QUEUE_PREFIX) for name in beats if name.startswith(QUEUE_PREFIX)}
    )
    for queue in queues:
        beat = beats.get(QUEUE_PREFIX + queue)
        if beat is None:
            age.add_metric([queue], float("inf"))
            continue
        seen.add_metric([queue], beat.beat_at.timestamp())
        age.add_metric([queue], max(0.0, (now - beat.beat_at).total_seconds()))
        if beat.delay_seconds is not None:
            delay.add_metric([queue], beat.delay_seconds)
    yield from (seen, age, delay)

    last_run = gauge(
        "registrar_sweep_last_run_timestamp_seconds", "Unix time this periodic sweep last finished.", labels=["sweep"]
    )
    duration = gauge(
        "registrar_sweep_last_duration_seconds", "How long this periodic sweep's last run took.", labels=["sweep"]
    )
    for name, beat in sorted(beats.items()):
        if not name.startswith(SWEEP_PREFIX):
            continue
        sweep = name.removeprefix(SWEEP_PREFIX)
        last_run.add_metric([sweep], beat.beat_at.timestamp())
        if beat.duration_seconds is not None:
            duration.add_metric([sweep], beat.duration_seconds)
    yield from (last_run, duration)


register_collector("heartbeats", collect_heartbeats)


def collect_audit_log(now) -> Iterable[Metric]:
    from portal.tlog.sequencer import seal_lag_seconds

    yield gauge(
        "registrar_audit_seal_lag_seconds",
        "How long the oldest audit event has waited for the log sequencer (0 when none waits).",
        seal_lag_seconds(now),
    )


register_collector("audit_log", collect_audit_log)
