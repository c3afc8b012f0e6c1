"""gunicorn settings for Registrar's web server: the same file for the systemd unit, the container and
``make prod-check``::

    gunicorn --config contrib/gunicorn.conf.py portal.wsgi:application

Why gunicorn's sync workers (and not granian): bench/RESULTS.md, "server choice" — behind the TLS proxy the two
serve the registration intake alike, granian's latency tail was far longer, and a sync worker that hangs is
killed and replaced after ``timeout``.

Tunables come from the environment, so a unit or a compose file changes them without editing this file:

=============================== =========================== ===================================================
``GUNICORN_BIND``               ``127.0.0.1:8000``           comma-separated addresses (``0.0.0.0:8000`` in a
                                                             container, where the port is not published raw)
``GUNICORN_WORKERS``            2 × CPUs + 1                 sync worker processes (each one request at a time)
``GUNICORN_TIMEOUT``            30                           seconds before a silent worker is killed
``GUNICORN_MAX_REQUESTS``       2000                         recycle a worker after this many requests (±10 %)
``GUNICORN_FORWARDED_ALLOW_IPS`` ``127.0.0.1,::1``           proxies whose ``X-Forwarded-Proto`` is believed
``GUNICORN_ACCESS_LOG``         ``false``                    one log line per request (the proxy usually has one)
``PROMETHEUS_MULTIPROC_DIR``    a fresh temporary directory  where workers write their metric files
=============================== =========================== ===================================================

Logs: gunicorn's own lines use Registrar's formatter (``LOG_FORMAT``, ``portal.logs``), the access line carries
the request id from the ``X-Request-ID`` response header. Metrics: workers write prometheus-client files to
``PROMETHEUS_MULTIPROC_DIR``, emptied when the server starts; a worker's files are retired when it exits.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # portal.logs below, when gunicorn is started from another directory
    sys.path.insert(0, str(ROOT))

from gunicorn import glogging  # noqa: E402

from portal.logs import bind_request_id, formatter, unbind_request_id  # noqa: E402


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _env_int(name: str, default: int) -> int:
    value = _env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}")


def _env_bool(name: str, default: bool) -> bool:
    return _env(name, "true" if default else "false").lower() in {"1", "true", "yes", "on"}


chdir = str(ROOT)
bind = [address.strip() for address in _env("GUNICORN_BIND", "127.0.0.1:8000").split(",") if address.strip()]
workers = _env_int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
worker_class = _env("GUNICORN_WORKER_CLASS", "sync")
threads = _env_int("GUNICORN_THREADS", 1)
timeout = _env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = 30
keepalive = 5
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = max_requests // 10
forwarded_allow_ips = _env("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# The heartbeat file every worker touches: on tmpfs when there is one (a container's /tmp may be a slow overlay).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - a directory, not a file name
preload_app = False  # each worker imports the app after the fork: its own database connection, its metric files
# gunicorn's control socket would live in $HOME (read-only under the unit) and be shared by every gunicorn of the
# user; signals (systemctl reload / HUP) are all the units use.
control_socket_disable = True

LOG_FORMAT = _env("LOG_FORMAT", "json")
loglevel = _env("LOG_LEVEL", "info").lower()
errorlog = "-"
accesslog = "-" if _env_bool("GUNICORN_ACCESS_LOG", False) else None
access_log_format = (
    'event=http_request remote=%(h)s method=%(m)s path="%(U)s" status=%(s)s bytes=%(B)s duration_ms=%(M)s '
    "request_id=%({x-request-id}o)s"
)

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="registrar-web-metrics-"))


class StructuredLogger(glogging.Logger):
    """gunicorn's logger with Registrar's formatter on its handlers, and the request id bound for access lines."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        structured = formatter(LOG_FORMAT if LOG_FORMAT in ("kv", "json") else "json")
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(structured)

    def access(self, resp, req, environ, request_time) -> None:
        request_id = next((value for name, value in resp.headers if name.lower() == "x-request-id"), "")
        token = bind_request_id(request_id)
        try:
            super().access(resp, req, environ, request_time)
        finally:
            unbind_request_id(token)


logger_class = StructuredLogger


def on_starting(server) -> None:
    """Empty the metrics directory: files left by an earlier server's workers would be added to this one's."""
    from portal.metrics import clear_multiprocess_dir

    clear_multiprocess_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def child_exit(server, worker) -> None:
    """Retire an exited worker's live gauges (its counters stay: totals must not go down)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
