"""Initial access tokens (RFC 7591 §3): minted for an owner with a scope and lifetime ceiling, revoked.

The plaintext is returned once and never stored (``portal.crypto.hash_token``); the registration endpoint
finds a token by its hash (``approvals.oauth2.credentials``).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from approvals.conditions import validate_networks, window_problem
from approvals.models import InitialAccessToken
from approvals.services.errors import TokenError
from inventory.models import IdPConnection, ScopeDefinition, Team
from portal.audit import Actor, audit_record
from portal.crypto import hash_token, new_token

TOKEN_PREFIX = "rat"  # "registrar access token" — recognisable in secret scanners
MAX_TOKEN_TTL_SECONDS = 365 * 24 * 3600


@transaction.atomic
def token_mint(
    *,
    actor: Actor,
    owner,
    purpose: str,
    scopes: list[str],
    max_ttl_seconds: int,
    max_uses: int = 1,
    internal_only: bool = False,
    valid_for: timedelta = timedelta(days=7),
    team: Team | None = None,
    idp: IdPConnection | None = None,
    allowed_networks: list[str] | None = None,
    approval_window: str = "",
) -> tuple[InitialAccessToken, str]:
    """Mint an initial access token. Returns the row and the plaintext, which is never stored.

    ``allowed_networks``: CIDR blocks registrations with it must come from; ``approval_window``: when its high-risk
    requests may be approved by people, e.g. ``"Mon-Fri 08:00-18:00 Europe/Berlin"`` (``approvals.conditions``)."""
    problems = []
    allowed_networks = [n.strip() for n in allowed_networks or [] if n.strip()]
    try:
        validate_networks(allowed_networks)
    except ValidationError as exc:
        problems.extend(exc.messages)
    approval_window = (approval_window or "").strip()
    if (window_problem_text := window_problem(approval_window)) is not None:
        problems.append(window_problem_text)
    purpose = (purpose or "").strip()
    if len(purpose) < 3:
        problems.append("purpose must say what the token is for (at least 3 characters)")
    scopes = sorted(set(scopes))
    if not scopes:
        problems.append("at least one scope is required")
    known = set(ScopeDefinition.objects.filter(name__in=scopes, is_active=True).values_list("name", flat=True))
    unknown = [s for s in scopes if s not in known]
    if unknown:
        problems.append("unknown scope(s): " + ", ".join(unknown))
    if not (60 <= max_ttl_seconds <= MAX_TOKEN_TTL_SECONDS):
        problems.append(f"max TTL must be between 60 and {MAX_TOKEN_TTL_SECONDS} seconds")
    if not (1 <= max_uses <= 10000):
        problems.append("max uses must be between 1 and 10000")
    if not owner.is_active:
        problems.append("the owner is not active")
    if problems:
        raise TokenError("; ".join(problems))
    plaintext = new_token(TOKEN_PREFIX)
    token = InitialAccessToken.objects.create(
        owner=owner,
        team=team,
        purpose=purpose,
        prefix=plaintext[:12],
        token_hash=hash_token(plaintext),
        allowed_scopes=scopes,
        max_ttl_seconds=max_ttl_seconds,
        max_uses=max_uses,
        internal_only=internal_only,
        idp=idp,
        allowed_networks=allowed_networks,
        approval_window=approval_window,
        expires_at=timezone.now() + valid_for,
    )
    audit_record(
        actor=actor,
        action="token.mint",
        object_type="initial_access_token",
        object_id=token.pk,
        after={
            "owner": owner.get_username(),
            "purpose": purpose,
            "scopes": scopes,
            "max_ttl_seconds": max_ttl_seconds,
            "max_uses": max_uses,
            "internal_only": internal_only,
            "allowed_networks": allowed_networks,
            "approval_window": approval_window,
            "prefix": token.prefix,
            "team": team.name if team else None,
        },
    )
    return token, plaintext


@transaction.atomic
def token_revoke(*, actor: Actor, token: InitialAccessToken, reason: str = "") -> InitialAccessToken:
    locked = InitialAccessToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is not None:
        raise TokenError("token already revoked")
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor, action="token.revoke", object_type="initial_access_token", object_id=locked.pk, reason=reason
    )
    return locked
