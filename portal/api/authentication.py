"""Bearer tokens (``Authorization: Token <token>``): the management API, and the audit log's read endpoints.

A token acts as its user, for what its ``rights`` allow (``portal.models.TokenRight``): ``api`` for
``/api/v1``, ``log:read`` for ``/log/checkpoint`` and ``/log/tile/…`` (a monitor's token needs nothing else),
``usage:write`` for ``POST /api/v1/usage/`` (a log shipper's or IdP hook's token needs nothing else).
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.crypto import hash_token
from portal.models import ApiToken, TokenRight


def api_token_lookup(raw: str) -> ApiToken | None:
    """The live token ``raw`` names (not revoked, not expired, its user active), noting its use; None if none."""
    api_token = (
        ApiToken.objects.select_related("user").filter(token_hash=hash_token(raw), revoked_at__isnull=True).first()
    )
    now = timezone.now()
    if api_token is None or (api_token.expires_at and api_token.expires_at <= now) or not api_token.user.is_active:
        return None
    ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
    return api_token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """A token with the ``right`` (``api`` here; subclasses name another, e.g. ``usage:write``)."""

    keyword = "Token"
    right: str = TokenRight.API

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="ignore").lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        api_token = api_token_lookup(header[1].decode(errors="ignore"))
        if api_token is None:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        if self.right not in (api_token.rights or []):
            raise exceptions.PermissionDenied(
                f"This token has no {self.right} right (rights: {', '.join(api_token.rights or []) or 'none'})."
            )
        return api_token.user, api_token

    def authenticate_header(self, request):
        return self.keyword
