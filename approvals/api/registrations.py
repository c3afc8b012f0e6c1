"""``POST /api/v1/registrations/``: pre-register a client (docs/cimd.md), by API token or session.

Parsing and rendering only: ``approvals.preregistration.preregister`` decides. 201 with the request when it was
recorded pending or approved; 400 with ``error``/``error_description`` for metadata or a document refused
(nothing written) and for a policy refusal (recorded: the body names the request); 403 for someone who may
not submit it.
With ``adopt`` (security and admins) the request proposes an owner for a shadow client found at the IdP
(docs/cimd.md "Adopting shadow clients"); a managed, ended or already-pending client is a 400.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals.choices import RequestState
from approvals.preregistration import GOVERNANCE_FIELDS, PreregistrationError, preregister
from inventory.models import Client


class PreregistrationInputSerializer(serializers.Serializer):
    cimd_url = serializers.CharField(required=False, max_length=2000, help_text="The client's CIMD URL (its client_id)")
    metadata = serializers.DictField(required=False, help_text="RFC 7591 client metadata, as an agent would POST it")
    adopt = serializers.CharField(
        required=False,
        max_length=64,
        help_text="Registration id of a shadow client (found at the IdP) to adopt; security and admins. The "
        "metadata defaults to what the IdP reported",
    )
    owner = serializers.CharField(
        required=False, max_length=150, help_text="User name of the owner (admins; security when adopting)"
    )
    purpose = serializers.CharField(required=False, max_length=2000)
    scope = serializers.CharField(required=False, max_length=2000, help_text="Space-separated scopes")
    requested_ttl = serializers.IntegerField(required=False, min_value=1)
    audiences = serializers.ListField(child=serializers.CharField(max_length=2000), required=False, max_length=50)
    internal_only = serializers.BooleanField(required=False)

    def validate(self, attrs):
        if "adopt" in attrs:
            if "cimd_url" in attrs:
                raise serializers.ValidationError("an adoption takes metadata (or what the IdP reported), not cimd_url")
            client = Client.objects.filter(registration_id=attrs["adopt"]).first()
            if client is None:
                raise serializers.ValidationError({"adopt": f"no client {attrs['adopt']!r}"})
            attrs["adopt"] = client
        elif ("cimd_url" in attrs) == ("metadata" in attrs):
            raise serializers.ValidationError("give either cimd_url or metadata")
        name = attrs.get("owner")
        if name is not None:
            owner = get_user_model().objects.filter(username=name, is_active=True).first()
            if owner is None:
                raise serializers.ValidationError({"owner": f"no active user {name!r}"})
            attrs["owner"] = owner
        return attrs


class PreregistrationOutputSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    via = serializers.CharField()
    state = serializers.CharField()
    owner = serializers.CharField(source="owner.username", default=None)
    submitted_by = serializers.CharField(source="submitted_by.username", default=None)
    client_name = serializers.CharField()
    purpose = serializers.CharField()
    requested_scopes = serializers.ListField(child=serializers.CharField())
    granted_scopes = serializers.ListField(child=serializers.CharField())
    granted_ttl = serializers.IntegerField(allow_null=True)
    risk_tier = serializers.CharField()
    outcome = serializers.CharField()
    reasons = serializers.ListField(child=serializers.DictField())
    policy_version = serializers.IntegerField(allow_null=True)
    approvals_needed = serializers.IntegerField()
    cimd_url = serializers.CharField()
    cimd_sha256 = serializers.CharField()
    kind = serializers.CharField()
    client_id = serializers.SerializerMethodField(
        help_text="Registration id of the client it became (for an adoption: the shadow client it adopts)"
    )

    def get_client_id(self, obj) -> str | None:
        return obj.client.registration_id if obj.client_id else None


class RegistrationsView(APIView):
    """Pre-register a client: owners for themselves, admins for any owner (``portal.roles.can_preregister``)."""

    @extend_schema(
        summary="Pre-register a client (RFC 7591 metadata or a Client ID Metadata Document URL)",
        tags=["registrations"],
        request=PreregistrationInputSerializer,
        responses={
            201: PreregistrationOutputSerializer,
            # Two shapes, both objects: malformed input is the API's usual errors by field name; a refusal of the
            # metadata, the document or by policy is RFC 7591's {"error", "error_description", "reasons"?,
            # "request"?} (the refused request, when the policy recorded one).
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Malformed input (errors by field name), or refused: metadata, document or policy "
                "(error, error_description, reasons, request); nothing pre-registered",
            ),
            403: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Not signed in or no API right (detail), or may not pre-register for this owner "
                "(error, error_description)",
            ),
        },
    )
    def post(self, request):
        data = PreregistrationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            done = preregister(
                submitter=request.user,
                owner=values.get("owner"),
                metadata=values.get("metadata"),
                cimd_url=values.get("cimd_url"),
                governance={k: values[k] for k in GOVERNANCE_FIELDS if k in values},
                source_ip=request.META.get("REMOTE_ADDR"),
                adopt=values.get("adopt"),
            )
        except PreregistrationError as exc:
            body = {"error": exc.error, "error_description": exc.description, "reasons": exc.reasons}
            return Response(body, status=exc.status)
        reg_request = done.reg_request
        shown = PreregistrationOutputSerializer(reg_request).data
        if reg_request.state == RequestState.REFUSED:
            refusal: dict[str, Any] = {
                "error": reg_request.error or "invalid_client_metadata",
                "error_description": "; ".join(r.get("message", "") for r in reg_request.reasons or []),
                "request": shown,
            }
            return Response(refusal, status=status.HTTP_400_BAD_REQUEST)
        return Response(shown, status=status.HTTP_201_CREATED)
