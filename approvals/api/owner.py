"""Owners' API: initial access tokens (``/tokens/``' mint, list, revoke) and their own requests (``/approvals/mine/``,
withdraw). Same services, same role checks (``portal.roles``) as the pages; a minted token is in the response
to the call that created it, once, and never again."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from approvals import selectors
from approvals.api.serializers import RegistrationRequestSerializer
from approvals.filtersets import RequestFilterSet
from approvals.models import InitialAccessToken, RegistrationRequest
from approvals.services import DecisionError, TokenError, request_withdraw, token_mint, token_revoke
from approvals.tokens_views import token_state
from inventory.models import IdPConnection
from portal.api.errors import Conflict, ErrorSerializer
from portal.audit import Actor
from portal.paging import OrderedKeysetPagination
from portal.roles import HasRole, Role, has_role

# Owners their own tokens (/tokens/); admins every token, read and revoke, as Django admin lets them; only
# owners mint (a token binds what it registers to its owner).
TOKEN_ROLES = HasRole.of(Role.OWNER, Role.ADMIN)


class TokenSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    idp = serializers.CharField(source="idp.name", read_only=True, allow_null=True, default=None)
    team = serializers.CharField(source="team.slug", read_only=True, allow_null=True, default=None)
    state = serializers.SerializerMethodField(help_text="active, used up, expired or revoked")
    registrations = serializers.IntegerField(read_only=True, default=0, help_text="Requests made with it")

    class Meta:
        model = InitialAccessToken
        fields = ["id", "prefix", "owner", "purpose", "allowed_scopes", "max_ttl_seconds", "max_uses", "uses"]
        fields += [
            "internal_only",
            "allowed_networks",
            "approval_window",
            "idp",
            "team",
            "state",
            "registrations",
            "created_at",
        ]
        fields += ["expires_at"]
        fields += ["revoked_at", "last_used_at"]
        read_only_fields = fields

    def get_state(self, obj) -> str:
        return token_state(obj, timezone.now())


class MintedTokenSerializer(TokenSerializer):
    token = serializers.CharField(help_text="The token itself: shown in this response only, never again")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class TokenMintSerializer(serializers.Serializer):
    """The mint form's fields and bounds (``approvals.tokens_views.TokenMintForm``); the service checks again."""

    purpose = serializers.CharField(max_length=500, help_text="What the agent registering with it is for")
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=200), min_length=1, max_length=100, help_text="Allowed scopes"
    )
    max_ttl_hours = serializers.IntegerField(min_value=1, max_value=24 * 365, default=24)
    max_uses = serializers.IntegerField(min_value=1, max_value=10000, default=1)
    valid_days = serializers.IntegerField(min_value=1, max_value=365, default=7)
    internal_only = serializers.BooleanField(default=True)
    idp = serializers.CharField(
        required=False, allow_null=True, default=None, max_length=200, help_text="IdP connection name (default IdP)"
    )

    allowed_networks = serializers.ListField(
        child=serializers.CharField(max_length=64, trim_whitespace=True),
        required=False,
        default=list,
        help_text="CIDR blocks registrations with it (and their later calls) must come from; empty: anywhere",
    )

    approval_window = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=100,
        help_text="When people may approve its high-risk requests, e.g. 'Mon-Fri 08:00-18:00 Europe/Berlin'; "
        "empty: the policy's or the global window",
    )

    def validate_approval_window(self, value):
        from approvals.conditions import window_problem

        problem = window_problem(value)  # the one rule (approvals.conditions), as on the page and in the admin
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value

    def validate_allowed_networks(self, value):
        from approvals.conditions import networks_problem

        problem = networks_problem(value)  # the one rule (approvals.conditions), as on the page and in the admin
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value

    def validate_idp(self, value):
        if value is None:
            return None
        idp = IdPConnection.objects.filter(name=value, enabled=True).first()
        if idp is None:
            raise serializers.ValidationError("No enabled IdP connection with that name.")
        return idp


class ReasonInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


@extend_schema_view(
    list=extend_schema(summary="Your initial access tokens (admins: every token)", tags=["tokens"]),
    retrieve=extend_schema(summary="One of your tokens (admins: any)", tags=["tokens"]),
)
class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    pagination_class = OrderedKeysetPagination  # keyset in the list order, no count: ?after=/?before= (portal.paging)
    serializer_class = TokenSerializer
    permission_classes = [TOKEN_ROLES]
    lookup_value_regex = r"[0-9]+"
    queryset = InitialAccessToken.objects.none()  # for the schema; the real one is the caller's

    def get_queryset(self):
        tokens = InitialAccessToken.objects.all()
        if not has_role(self.request.user, Role.ADMIN):
            tokens = tokens.filter(owner_id=self.request.user.pk)
        return (
            tokens.select_related("idp", "team", "owner")
            .annotate(registrations=Count("requests"))
            .order_by("-created_at", "-pk")
        )

    @extend_schema(
        summary="Mint a token (the response holds it, once)",
        tags=["tokens"],
        request=TokenMintSerializer,
        responses={
            201: MintedTokenSerializer,
            400: OpenApiResponse(description="Malformed input or unknown scopes: errors by field; nothing minted"),
            403: OpenApiResponse(ErrorSerializer, description="Not an owner"),
        },
    )
    def create(self, request):
        if not has_role(request.user, Role.OWNER):
            raise PermissionDenied("Only owners mint tokens.")
        body = TokenMintSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            token, plaintext = token_mint(
                actor=Actor.user(request.user),
                owner=request.user,
                purpose=data["purpose"],
                scopes=data["scopes"],
                max_ttl_seconds=data["max_ttl_hours"] * 3600,
                max_uses=data["max_uses"],
                internal_only=data["internal_only"],
                valid_for=timedelta(days=data["valid_days"]),
                idp=data["idp"],
                allowed_networks=data["allowed_networks"],
                approval_window=data["approval_window"],
            )
        except TokenError as refused:  # the service's input rules (unknown scopes, …): nothing was minted
            raise ValidationError({"non_field_errors": [str(refused)]}) from refused
        token = self.get_queryset().get(pk=token.pk)
        token.token = plaintext  # for the serializer, this response only
        return Response(MintedTokenSerializer(token).data, status=201)

    @extend_schema(
        summary="Revoke a token: it can register nothing more (clients it made are unchanged)",
        tags=["tokens"],
        request=ReasonInputSerializer,
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(description="Malformed input"),
            404: OpenApiResponse(ErrorSerializer, description="Not one of your tokens (admins: no such token)"),
            409: OpenApiResponse(ErrorSerializer, description="Already revoked"),
        },
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = get_object_or_404(self.get_queryset(), pk=pk)
        body = ReasonInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            token_revoke(actor=Actor.user(request.user), token=token, reason=body.validated_data["reason"])
        except TokenError as refused:
            raise Conflict(str(refused)) from refused
        return Response(TokenSerializer(self.get_queryset().get(pk=token.pk)).data)


@extend_schema_view(
    list=extend_schema(summary="Requests you sponsor or made with your tokens", tags=["my requests"]),
    retrieve=extend_schema(summary="One of your requests, with its decisions", tags=["my requests"]),
)
class MyRequestViewSet(viewsets.ReadOnlyModelViewSet):
    pagination_class = OrderedKeysetPagination  # keyset in the list order, no count: ?after=/?before= (portal.paging)
    serializer_class = RegistrationRequestSerializer
    filterset_class = RequestFilterSet
    lookup_field = "public_id"
    lookup_url_kwarg = "public_id"
    queryset = RegistrationRequest.objects.none()  # for the schema; the real one is the caller's

    def get_queryset(self):
        return selectors.requests_of_owner(self.request.user)

    @extend_schema(
        summary="Withdraw your pending request",
        tags=["my requests"],
        request=ReasonInputSerializer,
        responses={
            200: RegistrationRequestSerializer,
            400: OpenApiResponse(description="Malformed input"),
            403: OpenApiResponse(ErrorSerializer, description="Not your request"),
            404: OpenApiResponse(ErrorSerializer, description="No such request of yours"),
            409: OpenApiResponse(ErrorSerializer, description="No longer pending"),
        },
    )
    @action(detail=True, methods=["post"])
    def withdraw(self, request, public_id=None):
        reg_request = self.get_object()
        body = ReasonInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            request_withdraw(reg_request=reg_request, actor=request.user, reason=body.validated_data["reason"])
        except DecisionError as refused:
            if refused.status_code == 403:
                raise PermissionDenied(str(refused)) from refused
            return Response({"detail": str(refused)}, status=refused.status_code)
        return Response(self.get_serializer(self.get_queryset().get(pk=reg_request.pk)).data)
