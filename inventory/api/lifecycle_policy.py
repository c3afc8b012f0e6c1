"""/api/v1/lifecycle-policy/: what ``/inventory/lifecycle-policy/`` offers — the active rules and the versions,
the what-if of proposed rules on live data (security and admins), and publishing a version (admins).
Same services: ``parse_rules``, ``preview``, ``lifecycle_policy_publish`` (one audit event)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.lifecycle_policies import (
    LifecyclePolicyError,
    active_lifecycle_rules,
    lifecycle_policy_publish,
    parse_rules,
    preview,
)
from inventory.models import LifecyclePolicy
from portal.api.errors import ErrorSerializer
from portal.audit import Actor
from portal.roles import HasRole, Role

PUBLISHERS = HasRole.of(Role.ADMIN, Role.SECURITY, write=[Role.ADMIN])


class LifecyclePolicyVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = LifecyclePolicy
        fields = ["version", "is_active", "monitor_only", "rules", "note", "created_at", "created_by"]
        read_only_fields = fields


class ActiveRulesSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="0: no version published yet (the defaults, monitor only)")
    monitor_only = serializers.BooleanField()
    rules = serializers.DictField()


class LifecyclePolicyStateSerializer(serializers.Serializer):
    active = ActiveRulesSerializer()
    versions = LifecyclePolicyVersionSerializer(many=True)


class RulesInputSerializer(serializers.Serializer):
    rules = serializers.DictField(help_text="attestation, inactivity and sponsors rules (the page's JSON)")
    monitor_only = serializers.BooleanField(default=False)

    def validate(self, attrs):
        try:
            attrs["parsed"] = parse_rules(attrs["rules"], monitor_only=attrs["monitor_only"])
        except LifecyclePolicyError as refused:
            raise ValidationError({"rules": [str(refused)]}) from refused
        return attrs


class PublishInputSerializer(RulesInputSerializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")


class RulePreviewSerializer(serializers.Serializer):
    rule = serializers.CharField()
    enabled = serializers.BooleanField()
    action = serializers.CharField()
    grace_days = serializers.IntegerField()
    scope = serializers.CharField()
    flagged = serializers.IntegerField(help_text="Clients flagged now")
    acted_on = serializers.IntegerField(help_text="Of those, reached by the action once the grace has passed")
    acts_from = serializers.DateTimeField(allow_null=True)
    by_owner = serializers.DictField(child=serializers.IntegerField())
    by_team = serializers.DictField(child=serializers.IntegerField())


class PreviewSerializer(serializers.Serializer):
    monitor_only = serializers.BooleanField()
    now = serializers.DateTimeField()
    rules = RulePreviewSerializer(many=True)


def _active() -> dict:
    current = active_lifecycle_rules()
    return {"version": current.version, "monitor_only": current.monitor_only, "rules": current.to_dict()}


@extend_schema(tags=["lifecycle policy"])
class LifecyclePolicyView(APIView):
    permission_classes = [PUBLISHERS]

    @extend_schema(
        summary="The active lifecycle rules and the last 50 versions", responses=LifecyclePolicyStateSerializer
    )
    def get(self, request):
        versions = LifecyclePolicy.objects.select_related("created_by").order_by("-version")[:50]
        return Response(LifecyclePolicyStateSerializer({"active": _active(), "versions": versions}).data)

    @extend_schema(
        summary="Publish a version (enforced, or monitor only); it becomes active at once",
        request=PublishInputSerializer,
        responses={
            201: LifecyclePolicyVersionSerializer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Invalid rules, each problem named; nothing published"
            ),
            403: OpenApiResponse(ErrorSerializer, description="Not an admin"),
        },
    )
    def post(self, request):
        body = PublishInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        published = lifecycle_policy_publish(
            actor=Actor.user(request.user),
            rules=body.validated_data["rules"],
            monitor_only=body.validated_data["monitor_only"],
            note=body.validated_data["note"],
            created_by=request.user,
        )
        return Response(LifecyclePolicyVersionSerializer(published).data, status=201)


@extend_schema(
    tags=["lifecycle policy"],
    summary="What-if: what the rules would flag and act on, on live data (changes nothing)",
    request=RulesInputSerializer,
    responses={
        200: PreviewSerializer,
        400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid rules, each problem named"),
        403: OpenApiResponse(ErrorSerializer, description="Not security or an admin"),
    },
)
class LifecyclePolicyPreviewView(APIView):
    # A POST that changes nothing: security may, as on the page.
    permission_classes = [HasRole.of(Role.ADMIN, Role.SECURITY, write=[Role.ADMIN, Role.SECURITY])]

    def post(self, request):
        body = RulesInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        what_if = preview(body.validated_data["parsed"])
        return Response(
            PreviewSerializer(
                {
                    "monitor_only": what_if.monitor_only,
                    "now": what_if.now,
                    "rules": [
                        {**vars(rule), "by_owner": dict(rule.by_owner), "by_team": dict(rule.by_team)}
                        for rule in what_if.rules
                    ],
                }
            ).data
        )
