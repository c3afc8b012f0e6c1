"""Bearer-token authentication for the management API (``Authorization: Token <token>``)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.crypto import hash_token
from portal.models import ApiToken


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="ignore").lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        token = header[1].decode(errors="ignore")
        api_token = (
            ApiToken.objects.select_related("user")
            .filter(token_hash=hash_token(token), revoked_at__isnull=True)
            .first()
        )
        now = timezone.now()
        if api_token is None or (api_token.expires_at and api_token.expires_at <= now):
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        if not api_token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive.")
        ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        return api_token.user, api_token

    def authenticate_header(self, request):
        return self.keyword
