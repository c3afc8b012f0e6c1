"""Portal pages: the role-appropriate home page and a health check."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.home import home_summary


@login_required
def home(request):
    return render(request, "portal/home.html", {"home": home_summary(request.user)})


@require_GET
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def permission_denied(request, exception=None):
    return render(request, "403.html", {"message": str(exception or "")}, status=403)
