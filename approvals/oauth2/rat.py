"""Registration access tokens (RFC 7592): rotation with a grace, and reuse detection.

Every RFC 7592 read and update rotates the token. An agent that loses the response carrying the new token must
not be locked out, so the token it just used (the *previous* one) keeps working until its successor is first
used or ``REGISTRAR_RAT_GRACE_SECONDS`` (default 2 minutes) pass. A use of the previous token inside the grace
rotates again: the successor it was never told about is *superseded*.

The previous token inside its grace reads and deletes; an update (PUT) needs the current token, so a replayed
update is applied once. A token that was used and is presented again outside the grace is a reuse — someone
else may hold a copy (a superseded token that was never used is merely invalid). Like Keycloak's refresh-token reuse detection, the reuse is refused, audited as a possible theft
(``registration.token_reuse``), and both the current and the previous token are revoked: the agent must
register again, or its owner rotates it from the inventory.

Rotation locks the request row and classifies the presented token again under the lock: of two uses at once one
rotates, and the other, finding its token now the previous one inside the grace, rotates again from there.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.models import RegistrationRequest
from approvals.oauth2.credentials import REGISTRATION_TOKEN_PREFIX
from approvals.oauth2.errors import Unauthorized
from portal.audit import Actor, audit_record
from portal.crypto import hash_token, new_token
from portal.logs import log_event

logger = logging.getLogger(__name__)

CURRENT = "current"
GRACE = "grace"
SPENT = "spent"
# Spent hashes remembered per registration: enough to recognise the tokens an agent could still hold.
SPENT_KEPT = 8
PREVIOUS_FOR_UPDATE = (
    "the registration access token has been rotated: an update needs the current one "
    "(read the registration with this one, inside its grace, to get it)"
)
_TOKEN_FIELDS = ["registration_access_token_hash", "rat_previous_hash", "rat_previous_until", "rat_spent_hashes"]


def _same(a: str | None, b: str) -> bool:
    return a is not None and a != "" and hmac.compare_digest(a, b)


def rat_classify(reg_request: RegistrationRequest, token_hash: str, now: datetime) -> str | None:
    """Which of the registration's tokens ``token_hash`` is: current, previous in its grace, spent, or none."""
    if _same(reg_request.registration_access_token_hash, token_hash):
        return CURRENT
    if _same(reg_request.rat_previous_hash, token_hash):
        until = reg_request.rat_previous_until
        if until is not None and until > now and reg_request.registration_access_token_hash:
            return GRACE
        return SPENT
    if any(_same(h, token_hash) for h in reg_request.rat_spent_hashes or ()):
        return SPENT
    return None


@dataclass
class Presented:
    """The token a caller authenticated with, and which one it was when the row was read."""

    token_hash: str
    kind: str


def rat_authenticate(reg_request: RegistrationRequest, bearer: str) -> Presented:
    """Check ``bearer`` against the registration's tokens; a reuse revokes them (and raises Unauthorized)."""
    token_hash = hash_token(bearer)
    kind = rat_classify(reg_request, token_hash, timezone.now())
    if kind == SPENT:
        rat_reuse_revoke(reg_request=reg_request, token_hash=token_hash)
        raise Unauthorized(
            "the registration access token was already used; its reuse revoked this registration's tokens "
            "(possible theft): register again or ask the owner"
        )
    if kind is None:
        raise Unauthorized("the registration access token is not valid for this registration")
    return Presented(token_hash=token_hash, kind=kind)


def _spent(reg_request: RegistrationRequest, *hashes: str | None) -> list[str]:
    spent = [h for h in (reg_request.rat_spent_hashes or []) if h]
    spent.extend(h for h in hashes if h)
    return spent[-SPENT_KEPT:]


def rat_rotate(reg_request: RegistrationRequest, presented: Presented, *, grace: bool = True) -> str:
    """Issue the next token; the presented one becomes the previous one (or stays it, inside its grace).

    Under the row's lock, the presented token classified again: of two uses at once, the second finds its token
    now the previous one inside the grace and rotates from there. Raises Unauthorized when it is neither, or
    when it is the previous one and ``grace`` is False (an update: applied once per token).
    """
    with transaction.atomic():
        locked = RegistrationRequest.objects.select_for_update().only("pk", *_TOKEN_FIELDS).get(pk=reg_request.pk)
        now = timezone.now()
        kind = rat_classify(locked, presented.token_hash, now)
        plaintext = new_token(REGISTRATION_TOKEN_PREFIX)
        new_hash = hash_token(plaintext)
        if kind == CURRENT:
            fields = {
                "registration_access_token_hash": new_hash,
                "rat_previous_hash": presented.token_hash,
                "rat_previous_until": now + timedelta(seconds=settings.REGISTRAR_RAT_GRACE_SECONDS),
                "rat_spent_hashes": _spent(locked, locked.rat_previous_hash),
            }
        elif kind == GRACE and grace:  # the previous token inside its grace: its never-used successor is superseded
            fields = {"registration_access_token_hash": new_hash}
        elif kind == GRACE:
            raise Unauthorized(PREVIOUS_FOR_UPDATE)
        else:
            raise Unauthorized("the registration access token was already used")
        RegistrationRequest.objects.filter(pk=locked.pk).update(**fields)
    for name, value in fields.items():
        setattr(reg_request, name, value)
    return plaintext


def rat_issue_fields(reg_request: RegistrationRequest) -> tuple[str, dict[str, Any]]:
    """A fresh token and the columns that make it the registration's only one (see :func:`rat_issue`)."""
    plaintext = new_token(REGISTRATION_TOKEN_PREFIX)
    return plaintext, {
        "registration_access_token_hash": hash_token(plaintext),
        "rat_previous_hash": "",
        "rat_previous_until": None,
        "rat_spent_hashes": _spent(reg_request, reg_request.rat_previous_hash),
    }


def rat_issue(reg_request: RegistrationRequest, *, also: dict[str, Any] | None = None) -> str:
    """A fresh token for a registration whose credential was not presented (a coalesced registration):
    every token issued before is superseded. ``also``: other columns to set in the same UPDATE."""
    plaintext, fields = rat_issue_fields(reg_request)
    RegistrationRequest.objects.filter(pk=reg_request.pk).update(**fields, **(also or {}))
    for name, value in fields.items():
        setattr(reg_request, name, value)
    return plaintext


def rat_revoke(reg_request: RegistrationRequest) -> None:
    """No token works for this registration any more (deleted, ended, or a reuse)."""
    fields = {
        "registration_access_token_hash": None,
        "rat_previous_hash": "",
        "rat_previous_until": None,
        "rat_spent_hashes": _spent(reg_request, reg_request.rat_previous_hash),
    }
    RegistrationRequest.objects.filter(pk=reg_request.pk).update(**fields)
    for name, value in fields.items():
        setattr(reg_request, name, value)


def rat_reuse_revoke(*, reg_request: RegistrationRequest, token_hash: str) -> bool:
    """A spent token came back: revoke the current and the previous token, audited as a possible theft.

    Only the first reuse that finds a token to revoke writes the audit event; later ones are plain 401s
    (counted with the other refused credentials), so a replay loop cannot flood the audit log."""
    with transaction.atomic():
        locked = (
            RegistrationRequest.objects.select_for_update()
            .filter(pk=reg_request.pk)
            .exclude(registration_access_token_hash=None)
            .first()
        )
        if locked is None:
            return False
        rat_revoke(locked)
        audit_record(
            actor=Actor.agent(f"client {locked.public_id}", locked.public_id),
            action="registration.token_reuse",
            object_type="registration_request",
            object_id=locked.public_id,
            after={"revoked": ["current", "previous"], "client": locked.client_id},
            reason="a used registration access token was presented again (possible theft): both tokens revoked",
        )
    log_event(logger, "registration.token_reuse", level=logging.WARNING, registration_id=locked.public_id)
    return True
