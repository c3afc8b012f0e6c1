"""/api/v1/trusted-issuers/ and /api/v1/trusted-cimd-domains/: what Django admin offers for them, for admins —
list, add, change, and deactivate (``POST …/<id>/deactivate/``; nothing is deleted here).
Writes: ``approvals.services.trust``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action

from approvals.models import TrustedCimdDomain, TrustedIssuer
from approvals.services.trust import trusted_cimd_domain_save, trusted_issuer_save
from inventory.api.config import NulSafeSlugRelatedField, crud_schema
from inventory.api.errors import errors
from inventory.models import Team
from portal.api.config import AdminConfigViewSet

User = get_user_model()


class TrustedIssuerSerializer(serializers.ModelSerializer):
    owner: serializers.SlugRelatedField[Any] = NulSafeSlugRelatedField(
        slug_field="username", queryset=User.objects.all(), help_text="Username of the owner of matching workloads"
    )
    team: serializers.SlugRelatedField[Any] = NulSafeSlugRelatedField(
        slug_field="slug", queryset=Team.objects.all(), required=False, allow_null=True, help_text="Team slug"
    )
    jwks = serializers.DictField(help_text='The issuer\'s JWKS (`{"keys": […]}`)')
    allowed_scopes = serializers.ListField(child=serializers.CharField(max_length=128), required=False)
    allowed_networks = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, help_text="CIDR blocks statements may come from"
    )

    class Meta:
        model = TrustedIssuer
        fields = [
            "id",
            "name",
            "kind",
            "issuer",
            "audience",
            "jwks",
            "subject",
            "owner",
            "team",
            "purpose",
            "allowed_scopes",
            "max_ttl_seconds",
            "internal_only",
            "allowed_networks",
            "approval_window",
            "idp",
            "enabled",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]


class TrustedCimdDomainSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrustedCimdDomain
        fields = ["id", "domain", "include_subdomains", "note", "enabled", "created_at"]
        read_only_fields = ["id", "created_at"]


@extend_schema_view(**crud_schema("trusted issuers", "Trusted issuer", TrustedIssuerSerializer))
class TrustedIssuerViewSet(AdminConfigViewSet):
    queryset = TrustedIssuer.objects.select_related("owner", "team").order_by("name", "pk")
    serializer_class = TrustedIssuerSerializer
    save = trusted_issuer_save
    filterset_fields = ["enabled", "kind"]

    @extend_schema(
        tags=["trusted issuers"],
        summary="Deactivate a trusted issuer (its statements are no longer accepted)",
        request=None,
        responses={200: TrustedIssuerSerializer, **errors()},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        return self.respond(self._write(self.get_object(), {"enabled": False}))


@extend_schema_view(**crud_schema("trusted CIMD domains", "Trusted CIMD domain", TrustedCimdDomainSerializer))
class TrustedCimdDomainViewSet(AdminConfigViewSet):
    queryset = TrustedCimdDomain.objects.order_by("domain")
    serializer_class = TrustedCimdDomainSerializer
    save = trusted_cimd_domain_save
    filterset_fields = ["enabled"]

    @extend_schema(
        tags=["trusted CIMD domains"],
        summary="Deactivate a trusted CIMD domain (its documents go to review again)",
        request=None,
        responses={200: TrustedCimdDomainSerializer, **errors()},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        return self.respond(self._write(self.get_object(), {"enabled": False}))
