"""The API's error shapes: ``{"detail": …}`` for a refusal, documented once for every endpoint."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import APIException


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class Conflict(APIException):
    """409: the request was well formed, the current state refused it, and nothing changed."""

    status_code = 409
    default_code = "conflict"
    default_detail = "The current state refuses this change."
