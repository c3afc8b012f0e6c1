"""Security API: the filterable client list (same FilterSet as /inventory/) and the two reports. Read-only, and
read from the replica when one is configured (portal.dbrouter)."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.api.serializers import (
    AttestSerializer,
    ClientSerializer,
    ComplianceIssueSerializer,
    FrameworkReportSerializer,
    SprawlSerializer,
)
from inventory.filtersets import ClientFilterSet
from inventory.lifecycle import LifecycleError, PermissionRefused
from inventory.lifecycle_policies import client_attest
from inventory.lifecycle_policies.evaluate import compliance_of
from inventory.pagination import SORT_CHOICES, KeysetPagination
from inventory.reports.controls import framework_report
from inventory.reports.evidence import evidence_export
from inventory.selectors import cached_report, clients_visible_to, dashboard_data
from portal.audit import Actor
from portal.dbrouter import ReplicaReadsMixin
from portal.roles import HasRole, Role

CLIENT_READERS = HasRole.of(Role.SECURITY, Role.ADMIN, Role.OWNER, Role.APPROVER)
OVERSIGHT = HasRole.of(Role.SECURITY, Role.ADMIN)


@extend_schema(tags=["inventory"])
class ClientViewSet(ReplicaReadsMixin, viewsets.ReadOnlyModelViewSet):
    """Clients visible to the caller (security/admin: all; owners: their own), filtered like /inventory/."""

    replica_actions = ("list", "retrieve")  # not evidence: the pack is exact, and its export is logged

    serializer_class = ClientSerializer
    permission_classes = [CLIENT_READERS]
    filterset_class = ClientFilterSet
    pagination_class = KeysetPagination
    lookup_field = "registration_id"
    lookup_value_regex = r"reg_[\w-]+"

    def get_queryset(self):
        return clients_visible_to(self.request.user).select_related("owner", "team", "idp", "parent")

    @extend_schema(
        parameters=[
            OpenApiParameter("after", str, description="Cursor from `next` (keyset pagination)"),
            OpenApiParameter("before", str, description="Cursor from `previous`"),
            OpenApiParameter("page_size", int, description="1–500, default 50"),
            OpenApiParameter("sort", str, enum=[value for value, _ in SORT_CHOICES]),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(description="One client, with its open compliance issues (lifecycle policies).")
    def retrieve(self, request, *args, **kwargs):
        client = self.get_object()
        data = dict(self.get_serializer(client).data)
        data["compliance_issues"] = ComplianceIssueSerializer(compliance_of(client), many=True).data
        return Response(data)

    @extend_schema(
        request=AttestSerializer,
        responses={200: OpenApiTypes.OBJECT},
        description="The owner (or an admin) attests the client is still needed and its scopes still right.",
    )
    @action(detail=True, methods=["post"])
    def attest(self, request, registration_id=None):
        client = get_object_or_404(self.get_queryset(), registration_id=registration_id)
        body = AttestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            attested = client_attest(client=client, user=request.user, note=body.validated_data.get("note", ""))
        except PermissionRefused as refused:
            raise PermissionDenied(str(refused))
        except LifecycleError as refused:
            return Response({"error": "not_attestable", "detail": str(refused)}, status=409)
        return Response(
            {
                "registration_id": attested.registration_id,
                "attested_at": attested.attested_at,
                "attested_by": request.user.username,
                "compliance_issues": ComplianceIssueSerializer(compliance_of(attested), many=True).data,
            }
        )

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        description="Evidence pack: the explain page as JSON. The export is logged (client.evidence_exported) and "
        "the pack proves itself with tools/verify_evidence.py; its bytes are exactly those the HTML page serves.",
    )
    @action(detail=True, methods=["get"])
    def evidence(self, request, registration_id=None):
        client = get_object_or_404(self.get_queryset(), registration_id=registration_id)
        # The file itself, not re-rendered: the verifier checks its exact bytes.
        return HttpResponse(
            evidence_export(client=client, actor=Actor.user(request.user)), content_type="application/json"
        )


def _pairs(rows):
    return [{"label": str(label), "count": count} for label, count in rows]


@extend_schema(tags=["reports"], responses=SprawlSerializer)
class SprawlReportView(ReplicaReadsMixin, APIView):
    """The sprawl dashboard's numbers."""

    permission_classes = [OVERSIGHT]

    def get(self, request):
        data = dashboard_data()  # from the counts: no snapshot needed
        payload = {
            **data,
            "by_tier": _pairs(data["by_tier"]),
            "by_idp": _pairs(data["by_idp"]),
            "by_team": _pairs(data["by_team"]),
            "top_owners": _pairs(data["top_owners"]),
            "depth": _pairs(data["depth"]),
        }
        return Response(SprawlSerializer(payload).data)


@extend_schema(tags=["reports"], responses=FrameworkReportSerializer)
class FrameworkReportView(ReplicaReadsMixin, APIView):
    """Controls measured on live data and their coverage of each framework."""

    permission_classes = [OVERSIGHT]

    def get(self, request):
        return Response(FrameworkReportSerializer(cached_report("frameworks", framework_report)).data)
