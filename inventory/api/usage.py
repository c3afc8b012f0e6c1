"""``POST /api/v1/usage/``: IdPs and log shippers report when clients last obtained a token (inventory.usage).

Authenticated only by an API token holding the ``usage:write`` right (``manage.py create_api_token --right
usage:write``), whatever its user's role; a session or an ``api`` token is not enough. A bad batch is refused
whole (400) with every problem named; nothing of it is written.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.usage import MAX_BATCH, UsageBatchInvalid, parse_usage_batch, usage_ingest
from portal.api.authentication import ApiTokenAuthentication
from portal.audit import Actor
from portal.models import TokenRight


class UsageTokenAuthentication(ApiTokenAuthentication):
    right = TokenRight.USAGE_WRITE


class UsageTokenScheme(OpenApiAuthenticationExtension):
    target_class = UsageTokenAuthentication
    name = "usageToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <api token>` holding the `usage:write` right (`create_api_token --right usage:write`)",
        }


@extend_schema(tags=["usage"])
class UsageIngestView(APIView):
    authentication_classes = [UsageTokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
        description=(
            f"A batch (at most {MAX_BATCH}) of `{{idp, client_id, last_used_at}}`: a JSON list or "
            '`{"events": [...]}`. `idp` is the IdP connection\'s name, `last_used_at` RFC 3339 with an offset. '
            "Last use only moves forward; unknown client ids are recorded as shadow clients. "
            "A bad batch is refused whole: `{error: invalid_batch, errors: [{index, field, reason}]}`."
        ),
    )
    def post(self, request):
        try:
            reports = parse_usage_batch(request.data)
        except UsageBatchInvalid as refused:
            return Response(
                {"error": "invalid_batch", "detail": str(refused), "errors": refused.errors[:100]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        token = request.auth
        result = usage_ingest(reports, actor=Actor.user(request.user), source=f"usage-api:{token.name}")
        return Response(result.to_dict())
