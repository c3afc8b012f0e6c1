"""/api/v1/people/: who has which role, and setting a person's roles — what Django admin's people pages offer
for roles (the person's groups), for admins only. ``portal.services.roles_set`` writes: the same
``user.admin_change`` event with the groups before and after. People are never deleted (their admin forbids it)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from portal.api.config import ADMINS, as_api_error
from portal.api.errors import ErrorSerializer
from portal.audit import Actor
from portal.roles import Role
from portal.services import roles_set

User = get_user_model()


class PersonSerializer(serializers.ModelSerializer):
    roles = serializers.SerializerMethodField(help_text="Registrar roles (superusers are admins too)")

    class Meta:
        model = User
        fields = ["username", "email", "is_active", "is_superuser", "roles"]
        read_only_fields = fields

    def get_roles(self, obj) -> list[str]:
        names = {g.name for g in obj.groups.all()} & {r.value for r in Role}
        return sorted(names)


class RolesInputSerializer(serializers.Serializer):
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=[r.value for r in Role]),
        allow_empty=True,
        help_text="Exactly the roles the person should have (an empty list removes them all)",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


@extend_schema_view(
    list=extend_schema(tags=["people"], summary="People and their roles"),
    retrieve=extend_schema(tags=["people"], summary="One person and their roles"),
)
class PersonViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = [ADMINS]
    serializer_class = PersonSerializer
    queryset = User.objects.prefetch_related("groups").order_by("username")
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"

    @extend_schema(
        tags=["people"],
        summary="Set a person's roles",
        request=RolesInputSerializer,
        responses={
            200: PersonSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Malformed input: errors by field; nothing changed"),
            403: OpenApiResponse(ErrorSerializer, description="Not an admin"),
            404: OpenApiResponse(ErrorSerializer, description="No such person"),
        },
    )
    @action(detail=True, methods=["post"])
    def roles(self, request, username=None):
        person = self.get_object()
        body = RolesInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            roles_set(
                actor=Actor.user(request.user),
                user=person,
                roles=body.validated_data["roles"],
                reason=body.validated_data["reason"],
            )
        except ValueError as refused:
            raise ValidationError({"roles": [str(refused)]}) from refused
        except DjangoValidationError as invalid:
            raise as_api_error(invalid) from invalid
        return Response(self.get_serializer(self.get_queryset().get(pk=person.pk)).data)
