"""/api/v1/scopes/ and /api/v1/teams/: the scope catalogue and teams, as Django admin offers them, for admins.

No delete: a scope is deactivated (``POST /scopes/<id>/deactivate/``), a team is never deleted (its admin
forbids it: clients, tokens and issuers would lose their team). Writes: ``inventory.config_services``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action

from inventory.api.errors import errors
from inventory.config_services import scope_save, team_members_change, team_save
from inventory.models import ScopeDefinition, Team
from portal.api.config import AdminConfigViewSet
from portal.audit import Actor

User = get_user_model()


class ScopeSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScopeDefinition
        fields = ["id", "name", "description", "sensitivity", "category", "is_active"]
        read_only_fields = ["id"]


class NulSafeSlugRelatedField(serializers.SlugRelatedField):
    """A slug lookup that refuses NUL bytes with a 400 (PostgreSQL cannot compare text holding them: a 500)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            raise serializers.ValidationError("Null characters are not allowed.")
        return super().to_internal_value(data)


class TeamSerializer(serializers.ModelSerializer):
    manager = NulSafeSlugRelatedField(
        slug_field="username", queryset=User.objects.all(), required=False, allow_null=True
    )
    members: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", many=True, read_only=True
    )

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "manager", "notify_email", "max_live_clients", "members"]
        read_only_fields = ["id", "members"]


class TeamMembersSerializer(serializers.Serializer):
    add = NulSafeSlugRelatedField(
        slug_field="username", queryset=User.objects.all(), many=True, required=False, default=list
    )
    remove = NulSafeSlugRelatedField(
        slug_field="username", queryset=User.objects.all(), many=True, required=False, default=list
    )

    def validate(self, attrs):
        if not attrs["add"] and not attrs["remove"]:
            raise serializers.ValidationError({"add": ["Name at least one person to add or remove."]})
        return attrs


def crud_schema(tag: str, noun: str, serializer) -> dict:
    """The documented answers of list / retrieve / create / update of one configuration model."""
    return {
        "list": extend_schema(tags=[tag], summary=f"{noun}s"),
        "retrieve": extend_schema(tags=[tag], summary=f"One {noun.lower()}"),
        "create": extend_schema(tags=[tag], summary=f"Add a {noun.lower()}", responses={201: serializer, **errors()}),
        "update": extend_schema(
            tags=[tag], summary=f"Change a {noun.lower()} (every field)", responses={200: serializer, **errors()}
        ),
        "partial_update": extend_schema(
            tags=[tag], summary=f"Change a {noun.lower()} (the fields given)", responses={200: serializer, **errors()}
        ),
    }


@extend_schema_view(**crud_schema("scopes", "Catalogue scope", ScopeSerializer))
class ScopeViewSet(AdminConfigViewSet):
    queryset = ScopeDefinition.objects.order_by("name")
    serializer_class = ScopeSerializer
    save = scope_save
    filterset_fields = ["is_active", "sensitivity", "category"]

    @extend_schema(
        tags=["scopes"],
        summary="Deactivate a scope (agents can no longer ask for it)",
        request=None,
        responses={200: ScopeSerializer, **errors()},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        return self.respond(self._write(self.get_object(), {"is_active": False}))


@extend_schema_view(**crud_schema("teams", "Team", TeamSerializer))
class TeamViewSet(AdminConfigViewSet):
    queryset = Team.objects.select_related("manager").prefetch_related("members").order_by("name")
    serializer_class = TeamSerializer
    save = team_save

    @extend_schema(
        tags=["teams"],
        summary="Add and/or remove members (usernames)",
        request=TeamMembersSerializer,
        responses={200: TeamSerializer, **errors()},
    )
    @action(detail=True, methods=["post"])
    def members(self, request, pk=None):
        team = self.get_object()
        body = TeamMembersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        team = team_members_change(
            team, actor=Actor.user(request.user), add=body.validated_data["add"], remove=body.validated_data["remove"]
        )
        return self.respond(Team.objects.prefetch_related("members").get(pk=team.pk))
