"""The base of the /api/v1/ configuration endpoints that stand in for Django admin pages (scope catalogue,
teams, trusted issuers, trusted CIMD domains): admins only (``HasRole`` admin, as the admin site), list / read /
create / change, and ``deactivate`` where the model has an on/off flag. Nothing is deleted here.

Views stay thin: the input serializer checks the shape, then the model's service (``save_audited`` underneath)
validates as the admin form does (``full_clean``), writes in one transaction and records the same
``<type>.admin_create`` / ``.admin_change`` event Django admin records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from portal.audit import Actor
from portal.roles import HasRole, Role

ADMINS = HasRole.of(Role.ADMIN)


def as_api_error(error: DjangoValidationError) -> ValidationError:
    """A model's validation error as the API's 400 body: ``{"field": ["why", …]}``."""
    if hasattr(error, "error_dict"):
        body = {("non_field_errors" if k == NON_FIELD_ERRORS else k): v for k, v in error.message_dict.items()}
        return ValidationError(body)
    return ValidationError({"non_field_errors": error.messages})


class AdminConfigViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Subclasses set ``queryset``, ``serializer_class`` and ``save`` (the model's service, called as
    ``save(obj_or_None, actor=…, changes=…)``)."""

    permission_classes = [ADMINS]
    http_method_names = ["get", "post", "patch", "put", "head", "options"]
    save: ClassVar[Callable[..., models.Model]]

    def _write(self, obj: models.Model | None, changes: dict[str, Any]) -> models.Model:
        try:
            return type(self).save(obj, actor=Actor.user(self.request.user), changes=changes)
        except DjangoValidationError as invalid:
            raise as_api_error(invalid) from invalid

    def perform_create(self, serializer):
        serializer.instance = self._write(None, dict(serializer.validated_data))

    def perform_update(self, serializer):
        serializer.instance = self._write(serializer.instance, dict(serializer.validated_data))

    def respond(self, obj: models.Model, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(obj).data, status=code)
