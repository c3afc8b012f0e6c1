"""Writes on the shared kernel's own models (people are written by ``inventory.directory`` / ``leavers``)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from portal.audit import Actor, audit_record
from portal.models import ApiToken


class ApiTokenError(Exception):
    """A refused API token change; nothing was written."""


@transaction.atomic
def api_token_revoke(*, actor: Actor, token: ApiToken, reason: str = "") -> ApiToken:
    """Revoke a management-API token for good (revocation is one-way: a new token is minted instead)."""
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is not None:
        raise ApiTokenError(f"API token {locked.prefix}… is already revoked")
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        action="api_token.revoke",
        object_type="api_token",
        object_id=locked.pk,
        before={"revoked_at": None},
        after={"revoked_at": locked.revoked_at},
        reason=reason,
    )
    return locked
