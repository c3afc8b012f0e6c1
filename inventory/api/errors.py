"""How the inventory API answers a refused lifecycle call, and the error shapes it documents.

A refusal by a permission rule (``PermissionRefused``) is a 403; any other lifecycle refusal (the client is in
the wrong state, held, already offered, …) is a 409 ``{"detail": …}``: the request was well formed, the state
of things refused it, and nothing changed. Malformed input never reaches a service: it is a 400 from the
input serializer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework.exceptions import PermissionDenied

from inventory.lifecycle import LifecycleError, PermissionRefused
from portal.api.errors import Conflict, ErrorSerializer

T = TypeVar("T")


def run_service(call: Callable[[], T]) -> T:
    """``call()``; a lifecycle refusal becomes a 403 (permission) or a 409 (state), with its message."""
    try:
        return call()
    except PermissionRefused as refused:
        raise PermissionDenied(str(refused)) from refused
    except LifecycleError as refused:
        raise Conflict(str(refused)) from refused


def errors(conflict: str = "The current state refuses it; nothing changed") -> dict:
    """The documented error responses of a state-changing endpoint."""
    return {
        400: OpenApiResponse(OpenApiTypes.OBJECT, description="Malformed input: errors by field name; nothing changed"),
        403: OpenApiResponse(ErrorSerializer, description="Your role, or this object, does not allow it"),
        404: OpenApiResponse(ErrorSerializer, description="No such object visible to you"),
        409: OpenApiResponse(ErrorSerializer, description=conflict),
    }
