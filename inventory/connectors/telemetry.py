"""Counters of IdP calls, by connection (``IdPConnection.name``), kind, method and outcome.

Incremented by :meth:`inventory.connectors.base.BaseConnector._request` for every HTTP call a connector makes,
in whichever process makes it (a web process on the inline 201 path, a Celery worker otherwise); see
``portal.metrics`` for how the processes' counts are added up.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

IDP_REQUESTS = Counter(
    "registrar_idp_requests",
    "HTTP calls to identity providers, by connection, method and outcome.",
    ["connection", "kind", "method", "outcome"],
)
IDP_REQUEST_SECONDS = Histogram(
    "registrar_idp_request_duration_seconds",
    "Latency of HTTP calls to identity providers.",
    ["connection", "kind", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)


def outcome_of(*, status: int = 0, error: str = "") -> str:
    """``ok`` (< 400), ``client_error`` (4xx), ``throttled`` (429), ``server_error`` (5xx), ``timeout`` or
    ``connection_error`` (no answer)."""
    if error:
        return "timeout" if "Timeout" in error else "connection_error"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


def observe_idp_call(
    *, connection: str, kind: str, method: str, seconds: float, status: int = 0, error: str = ""
) -> None:
    IDP_REQUESTS.labels(connection, kind, method, outcome_of(status=status, error=error)).inc()
    IDP_REQUEST_SECONDS.labels(connection, kind, method).observe(seconds)
