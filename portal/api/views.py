"""What the API answers outside its routes: a path under ``/api/`` that names no endpoint is a JSON 404,
like a missing object, not the HTML page people get."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt  # it changes nothing, and a POST to a wrong path deserves the 404, not the CSRF page
def api_not_found(request, *args, **kwargs) -> JsonResponse:
    return JsonResponse({"detail": "No such endpoint."}, status=404)
