"""/api/v1/policy/: the approval policy's versions (admins read and publish; security reads).

Publishing is what saving in Django admin does (``approvals.policy_store.policy_publish``): a new version
becomes active, the old ones stay for the verdicts they explain; one ``policy.publish`` audit event.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from approvals.models import Policy
from approvals.policy_store import PolicyError, policy_publish
from portal.api.errors import ErrorSerializer
from portal.audit import Actor
from portal.roles import HasRole, Role


class PolicySerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Policy
        fields = ["version", "is_active", "thresholds", "note", "created_at", "created_by"]
        read_only_fields = fields


class PolicyPublishSerializer(serializers.Serializer):
    thresholds = serializers.DictField(
        help_text="The whole policy (every threshold; see the active version's `thresholds` for the names)"
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")


@extend_schema_view(
    list=extend_schema(summary="Policy versions, newest first", tags=["policy"]),
    retrieve=extend_schema(summary="One policy version", tags=["policy"]),
)
class PolicyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = PolicySerializer
    permission_classes = [HasRole.of(Role.ADMIN, Role.SECURITY, write=[Role.ADMIN])]
    queryset = Policy.objects.select_related("created_by").order_by("-version")
    lookup_field = "version"
    lookup_value_regex = r"[0-9]+"

    @extend_schema(
        summary="Publish a new version (it becomes active at once)",
        tags=["policy"],
        request=PolicyPublishSerializer,
        responses={
            201: PolicySerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid thresholds, each problem named"),
            403: OpenApiResponse(ErrorSerializer, description="Not an admin"),
        },
    )
    def create(self, request):
        body = PolicyPublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            published = policy_publish(
                actor=Actor.user(request.user),
                thresholds=body.validated_data["thresholds"],
                note=body.validated_data["note"],
                created_by=request.user,
            )
        except PolicyError as refused:  # nothing was published
            raise ValidationError({"thresholds": [str(refused)]}) from refused
        return Response(PolicySerializer(published).data, status=201)
