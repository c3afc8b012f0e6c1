"""/api/v1/idp-connections/: what Django admin's IdP connection pages offer for credentials, for admins —
which credentials are set (never a value), set/replace/clear them (write-only), and "test connection".

Same services as the admin and ``manage.py set_idp_secret``: ``idp_secrets_set`` (one ``idp.secrets_set``
audit event naming the credentials, never a value) and ``idp_connection_test`` (one ``idp.connection_test``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView, get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.api.errors import errors
from inventory.idp_secrets import IdPSecretError, idp_connection_test, idp_secret_status, idp_secrets_set
from inventory.models import IdPConnection
from portal.audit import Actor
from portal.roles import HasRole, Role

ADMINS = HasRole.of(Role.ADMIN)


class IdPConnectionSerializer(serializers.ModelSerializer):
    credentials = serializers.SerializerMethodField(help_text="Each credential the kind uses: whether it is set")

    class Meta:
        model = IdPConnection
        fields = ["id", "name", "kind", "enabled", "is_default", "last_reconciled_at", "credentials"]
        read_only_fields = fields

    def get_credentials(self, obj) -> dict[str, bool]:
        return idp_secret_status(obj)


class SecretsInputSerializer(serializers.Serializer):
    values = serializers.DictField(
        child=serializers.CharField(max_length=4096, trim_whitespace=False),
        required=False,
        default=dict,
        help_text="Credential name → new value (set or replace); never shown back",
    )
    clear = serializers.ListField(child=serializers.CharField(max_length=128), required=False, default=list)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class SecretsResultSerializer(serializers.Serializer):
    changed = serializers.ListField(child=serializers.CharField(), help_text="Names set or cleared (no values)")
    connection = IdPConnectionSerializer()


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    steps = serializers.ListField(child=serializers.CharField(), help_text="What worked, step by step")
    error = serializers.CharField(allow_blank=True, help_text="The IdP's error, any secret censored")


@extend_schema(tags=["idp connections"], summary="IdP connections and which of their credentials are set")
class IdPConnectionListView(ListAPIView):
    permission_classes = [ADMINS]
    serializer_class = IdPConnectionSerializer
    queryset = IdPConnection.objects.order_by("name", "pk")


@extend_schema(
    tags=["idp connections"],
    summary="Set, replace or clear credentials (write-only: the answer says which are set, never a value)",
    request=SecretsInputSerializer,
    responses={200: SecretsResultSerializer, **errors()},
)
class IdPSecretsView(APIView):
    permission_classes = [ADMINS]

    def post(self, request, pk: int):
        idp = get_object_or_404(IdPConnection, pk=pk)
        body = SecretsInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            changed = idp_secrets_set(
                idp=idp,
                actor=Actor.user(request.user),
                values=body.validated_data["values"],
                clear=body.validated_data["clear"],
                reason=body.validated_data["reason"],
            )
        except IdPSecretError as refused:  # an unknown name or an empty value: nothing stored
            raise ValidationError({"values": [str(refused)]}) from refused
        idp.refresh_from_db()
        return Response(SecretsResultSerializer({"changed": changed, "connection": idp}).data)


@extend_schema(
    tags=["idp connections"],
    summary="Test the connection: call the IdP with the stored credentials (changes nothing there)",
    request=None,
    responses={200: ConnectionTestSerializer, **errors()},
)
class IdPConnectionTestView(APIView):
    permission_classes = [ADMINS]

    def post(self, request, pk: int):
        idp = get_object_or_404(IdPConnection, pk=pk)
        result = idp_connection_test(idp=idp, actor=Actor.user(request.user))
        return Response(ConnectionTestSerializer(result).data)
