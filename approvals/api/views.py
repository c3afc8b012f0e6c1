"""GET /api/v1/requests/ (filterable) and POST /api/v1/requests/<id>/approve|deny, via the same services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from approvals import selectors
from approvals.api import schema  # noqa: F401 - registers the API token scheme with drf-spectacular
from approvals.api.serializers import (
    ApproveInputSerializer,
    DenyInputSerializer,
    RegistrationRequestSerializer,
)
from approvals.filtersets import RequestFilterSet
from approvals.services import DecisionError, request_approve, request_deny
from portal.api.errors import ErrorSerializer
from portal.paging import OrderedKeysetPagination
from portal.roles import HasRole, Role

DECISION_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Missing reason, widened scopes or lifetime"),
    403: OpenApiResponse(ErrorSerializer, description="Not an approver, or a party to the request"),
    409: OpenApiResponse(
        ErrorSerializer,
        description="Request not pending, already decided by you, or (last "
        "approval) the owner is at their live-client quota: the request stays pending",
    ),
}


@extend_schema_view(
    list=extend_schema(summary="List registration requests", tags=["requests"]),
    retrieve=extend_schema(summary="One registration request with its decisions", tags=["requests"]),
)
class RegistrationRequestViewSet(viewsets.ReadOnlyModelViewSet):
    """Registration requests. Approvers and security read; only approvers decide (same rules as the queue)."""

    pagination_class = OrderedKeysetPagination  # keyset in the list order, no count: ?after=/?before= (portal.paging)
    serializer_class = RegistrationRequestSerializer
    filterset_class = RequestFilterSet
    lookup_field = "public_id"
    lookup_url_kwarg = "public_id"
    permission_classes = [HasRole.of(Role.APPROVER, Role.SECURITY, Role.ADMIN, write=[Role.APPROVER])]

    def get_queryset(self):
        return selectors.requests_for_api()

    @extend_schema(
        summary="Approve (one approval; the last needed one creates the client)",
        tags=["requests"],
        request=ApproveInputSerializer,
        responses={200: RegistrationRequestSerializer, **DECISION_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, public_id=None):
        reg_request = self.get_object()
        data = ApproveInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._decide(
            lambda: request_approve(reg_request=reg_request, approver=request.user, **data.validated_data), reg_request
        )

    @extend_schema(
        summary="Deny (ends the request)",
        tags=["requests"],
        request=DenyInputSerializer,
        responses={200: RegistrationRequestSerializer, **DECISION_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def deny(self, request, public_id=None):
        reg_request = self.get_object()
        data = DenyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._decide(
            lambda: request_deny(reg_request=reg_request, approver=request.user, **data.validated_data), reg_request
        )

    def _decide(self, call, reg_request):
        try:
            call()
        except DecisionError as exc:
            return Response({"detail": str(exc)}, status=exc.status_code)
        fresh = self.get_queryset().get(pk=reg_request.pk)  # with what the serializer reads
        return Response(self.get_serializer(fresh).data, status=status.HTTP_200_OK)
