"""Clean answers while the database is gone: 503 with ``Retry-After``, one warning per outage, no stack traces.

When PostgreSQL restarts or the network to it drops, every request that touches it raises an
``OperationalError``; without this module each one became a 500 with Django's HTML error page and a stack trace
in the log. Here:

* :class:`DatabaseUnavailableMiddleware` turns an exception that means *the database cannot be reached*
  (:func:`is_database_unavailable`: a connection failure or an administrator/crash shutdown, never a statement
  timeout, a lock timeout or a constraint violation) into a 503: the RFC 7591 error shape
  ``{"error": "temporarily_unavailable", …}`` on the machine paths (``/oauth2/…``, ``/api/…``, ``/scim/…``,
  ``/log/…``), a short "Registrar is briefly unavailable" page everywhere else. Both carry ``Retry-After``.
* The first such exception in a process opens an **outage** (:data:`outage`): one ``WARNING`` line, then, while
  it lasts, requests get the 503 at once without waiting on a connection attempt, except that at most one
  request per :data:`PROBE_INTERVAL_SECONDS` tries ``SELECT 1`` first; when that answers, the outage closes
  with one more ``WARNING`` line (how long it lasted, how many requests were refused) and the request is served.
  So a restart costs each web process two log lines, and recovery is noticed within a second of it.
* The human page is rendered from ``503.html`` without a request: no context processors, no session or user
  lookup, nothing that needs the database.

``/healthz``, ``/readyz`` and ``/metrics`` are never short-circuited: ``/readyz`` runs its own database check and
answers 503 while it fails, ``/healthz`` touches nothing and stays 200 (a database outage must not make an
orchestrator restart healthy web servers).

The outage state is per process (a gunicorn worker, a thread-safe lock for threaded workers): four workers log
one warning each per outage, which is bounded, and nothing here needs Redis, which may be down too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template import loader

from portal.logs import log_event

logger = logging.getLogger(__name__)

__all__ = [
    "API_PREFIXES",
    "DatabaseUnavailableMiddleware",
    "PROBE_INTERVAL_SECONDS",
    "RETRY_AFTER_SECONDS",
    "is_database_unavailable",
    "outage",
    "unavailable_response",
]

# Paths whose callers are programs: they get JSON, never HTML.
API_PREFIXES = ("/oauth2/", "/api/", "/scim/", "/log/")
# Never short-circuited (see the module docstring).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_SECONDS = 5
PROBE_INTERVAL_SECONDS = 1.0

# SQLSTATEs that mean the server cannot serve this connection at all (class 08, connection exception, and the
# operator-intervention codes a shutting-down or recovering server sends): PostgreSQL appendix A.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached (not that a statement failed).

    Django wraps the driver's exception (``__cause__``). A psycopg ``OperationalError`` without a SQLSTATE is a
    connection that failed or broke (refused, reset, server closed it); with one, only class 08 and the shutdown
    codes count: ``QueryCanceled`` (a statement timeout) and ``LockNotAvailable`` are ``OperationalError`` too,
    and they are the request's own problem, not an outage.
    """
    if isinstance(exc, InterfaceError):  # "connection already closed"
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__ or exc.__context__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is None:
        return True
    return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES


@dataclass
class _Outage:
    """This process's view of the database: reachable, or down since ``since`` (monotonic seconds)."""

    since: float | None = None
    last_probe: float = 0.0
    refused: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.since is not None

    def begin(self, exc: BaseException) -> None:
        with self._lock:
            self.refused += 1
            self.last_probe = time.monotonic()
            if self.since is not None:
                return
            self.since = self.last_probe
        log_event(
            logger,
            "database_unavailable",
            level=logging.WARNING,
            error=_describe(exc),
            answer="503 with Retry-After until it answers again",
        )

    def end(self) -> None:
        with self._lock:
            if self.since is None:
                return
            lasted, refused = time.monotonic() - self.since, self.refused
            self.since, self.refused = None, 0
        log_event(logger, "database_available", level=logging.WARNING, outage_s=round(lasted, 1), refused=refused)

    def probe_due(self) -> bool:
        """Whether this request should try the database (at most one per PROBE_INTERVAL_SECONDS)."""
        with self._lock:
            now = time.monotonic()
            if now - self.last_probe < PROBE_INTERVAL_SECONDS:
                return False
            self.last_probe = now
            return True

    def refuse(self) -> None:
        with self._lock:
            self.refused += 1

    def reset(self) -> None:  # tests
        with self._lock:
            self.since, self.last_probe, self.refused = None, 0.0, 0


outage = _Outage()


def _describe(exc: BaseException) -> str:
    from portal.health import describe

    return describe(exc.__cause__ or exc).splitlines()[0]


def unavailable_response(request) -> HttpResponse:
    """The 503 for ``request``: JSON on the machine paths, the short page elsewhere; both with Retry-After."""
    response = _response(request)
    # Django's handler logs every 5xx at ERROR (django.utils.log.log_response) unless the response says it has
    # been logged: the outage has its one warning, not a line per request.
    response._has_been_logged = True  # type: ignore[attr-defined]  # Django reads this private flag
    return response


def _response(request) -> HttpResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}
    if request.path_info.startswith(API_PREFIXES):
        return JsonResponse(
            {
                "error": "temporarily_unavailable",
                "error_description": "Registrar is briefly unavailable; retry after the Retry-After interval",
            },
            status=503,
            headers=headers,
        )
    # No request passed: no context processors, so no session, user or database lookup while rendering.
    return HttpResponse(loader.get_template("503.html").render(), status=503, headers=headers)


def response_for(request, exc: BaseException) -> HttpResponse | None:
    """The 503 if ``exc`` means the database is gone (opening an outage), else None (let it propagate)."""
    if not is_database_unavailable(exc):
        return None
    outage.begin(exc)
    return unavailable_response(request)


def _database_answers() -> bool:
    from django.db import connection

    # A connection that broke is already closed by Django at request_started (close_old_connections, with
    # CONN_HEALTH_CHECKS), and one that breaks here is closed at the next: the probe needs no clean-up.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        if is_database_unavailable(exc):
            return False
        raise
    return True


# A middleware further in (sessions, authentication, MFA) that meets the outage raises outside any view, where
# Django turns the exception into a 500 before an outer middleware sees it and logs it with its stack trace.
# The got_request_exception signal is sent first, inside the except block: it marks the request, and the middleware
# below swaps the 500 for the 503; the filter keeps Django's per-request ERROR line out of the log.
_MARK = "_registrar_database_unavailable"


def _mark_request(sender, request=None, **kwargs) -> None:
    import sys

    exc = sys.exc_info()[1]
    if request is not None and exc is not None and is_database_unavailable(exc):
        setattr(request, _MARK, exc)


class _OutageLogFilter(logging.Filter):
    """Drops ``django.request`` records whose exception is a database outage (logged once, by the outage)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and is_database_unavailable(exc))


def _install() -> None:
    from django.core.signals import got_request_exception

    got_request_exception.connect(_mark_request, dispatch_uid="portal.unavailable")
    request_logger = logging.getLogger("django.request")
    if not any(isinstance(f, _OutageLogFilter) for f in request_logger.filters):
        request_logger.addFilter(_OutageLogFilter())


class DatabaseUnavailableMiddleware:
    """See the module docstring. Sits after the request id (so 503s carry one) and before everything that may
    touch the database (sessions, authentication, the agents' fast path)."""

    def __init__(self, get_response):
        self.get_response = get_response
        _install()

    def __call__(self, request):
        if outage.active and request.path_info not in EXEMPT_PATHS:
            if not (outage.probe_due() and _database_answers()):
                outage.refuse()
                return unavailable_response(request)
            outage.end()
        response = self.get_response(request)
        exc = getattr(request, _MARK, None)
        if exc is not None and response.status_code >= 500:
            outage.begin(exc)
            return unavailable_response(request)
        return response

    def process_exception(self, request, exception):
        return response_for(request, exception)
