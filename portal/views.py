"""Portal pages: the role-appropriate home page and a health check."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.home import home_summary
from portal.tlog.sequencer import seal_lag_seconds

SEAL_LAG_WARN_SECONDS = 10.0


@login_required
def home(request):
    return render(request, "portal/home.html", {"home": home_summary(request.user)})


@require_GET
def healthz(request):
    """Liveness and readiness: the database answers (one indexed query), plus the audit log's seal lag — how
    long the oldest event has waited for the sequencer. A large lag is reported, not failed on: intake never
    waits for the sequencer, so the web tier stays ready while an operator looks at the workers."""
    lag = seal_lag_seconds()
    return JsonResponse({"status": "ok", "audit_log": {"seal_lag_seconds": round(lag, 3),
                                                       "sealing": "behind" if lag > SEAL_LAG_WARN_SECONDS else "ok"}})


def permission_denied(request, exception=None):
    return render(request, "403.html", {"message": str(exception or "")}, status=403)
