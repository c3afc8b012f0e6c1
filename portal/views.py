"""Portal pages: the role-appropriate home page, and the endpoints probes and Prometheus call.

``/healthz``, ``/readyz`` and ``/metrics`` are answered by ``portal.middleware.ProbeMiddleware`` for callers in
``REGISTRAR_PROBE_NETWORKS`` (no host or HTTPS check); anyone else reaches them through the normal stack.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from portal import health
from portal.home import home_summary
from portal.middleware import is_probe

NO_STORE = {"Cache-Control": "no-store"}


@login_required
def home(request):
    return render(request, "portal/home.html", {"home": home_summary(request.user)})


@require_safe
def healthz(request):
    """Liveness: the process answers. Touches no dependency, so a database outage never restarts web servers."""
    return JsonResponse({"status": "ok"}, headers=NO_STORE)


@require_safe
def readyz(request):
    """Readiness: 200 when every required dependency answers, 503 naming the one that does not.

    Probe-network callers get each check's details and error; anyone else only the names and statuses.
    """
    ready, results = health.run_checks()
    detailed = is_probe(request)
    failing = [name for name, (check, _) in results.items() if check.status != health.OK]
    body = {
        "status": "ok" if not failing else ("degraded" if ready else "fail"),
        "checks": {
            name: check.as_dict(required=required, detailed=detailed) for name, (check, required) in results.items()
        },
    }
    response = JsonResponse(body, status=200 if ready else 503, headers=NO_STORE)
    # A 503 here is the answer, with its reasons in the body; Django would also log every one at ERROR (a probe
    # every few seconds for the length of an outage). portal.unavailable logs the outage once per process.
    response._has_been_logged = True  # type: ignore[attr-defined]  # Django reads this private flag
    return response


@require_safe
def metrics(request):
    """Prometheus exposition, for the probe networks or a bearer holding ``REGISTRAR_METRICS_TOKEN``."""
    if not (is_probe(request) or _metrics_token_ok(request)):
        if settings.REGISTRAR_METRICS_TOKEN:
            response = JsonResponse(
                {"error": "invalid_token", "error_description": "a metrics token is required"},
                status=401,
                headers=NO_STORE,
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return JsonResponse(
            {
                "error": "forbidden",
                "error_description": "metrics are served to the probe networks "
                "only (REGISTRAR_PROBE_NETWORKS) unless REGISTRAR_METRICS_TOKEN is set",
            },
            status=403,
            headers=NO_STORE,
        )
    from prometheus_client import CONTENT_TYPE_LATEST

    from portal.metrics import exposition

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST, headers=NO_STORE)


def _metrics_token_ok(request) -> bool:
    expected = settings.REGISTRAR_METRICS_TOKEN
    scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def permission_denied(request, exception=None):
    return render(request, "403.html", {"message": str(exception or "")}, status=403)
