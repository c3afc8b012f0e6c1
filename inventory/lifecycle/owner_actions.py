"""What an owner (or an admin, or a system caller) does to one client: retire, suspend, resume, rotate its key.

Renewals are in :mod:`inventory.lifecycle.renewals`, changes of owner in :mod:`inventory.lifecycle.transfers`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, HoldKind, OutboxOperation
from inventory.keys import KeySetError, jwks_thumbprints, validate_public_jwks
from inventory.lifecycle.errors import ClientHeld, LifecycleError
from inventory.lifecycle.holds import Hold
from inventory.lifecycle.state import acting, check_transition, lock_client, require_manage
from inventory.lifecycle.transitions import client_transition, suspended_ancestor
from inventory.models import Client
from inventory.outbox import outbox_enqueue
from portal.audit import Actor, audit_record


def client_retire(*, client: Client, user=None, actor: Actor | None = None, reason: str = "") -> Client:
    """Retire the client (and its live descendants); the IdP deletes it via the outbox."""
    with transaction.atomic():
        require_manage(user, lock_client(client))
        return client_transition(
            client=client, target=ClientState.RETIRED, actor=acting(user, actor), reason=reason, action="client.retire"
        )


def client_suspend(*, client: Client, user=None, actor: Actor | None = None, reason: str = "") -> Client:
    """Suspend an active client and its live descendants; the IdP disables them via the outbox.

    The owner's suspension stays theirs to lift. An admin suspending someone else's client places a hold
    (kind ``admin``): the owner sees why and cannot resume it.
    """
    with transaction.atomic():
        locked = lock_client(client)
        require_manage(user, locked)
        hold = None
        if user is not None and user.pk != locked.owner_id:
            hold = Hold(
                kind=HoldKind.ADMIN,
                by_id=user.pk,
                reason=(reason or "").strip() or f"suspended by the admin {user.get_username()}",
            )
        return client_transition(
            client=client,
            target=ClientState.SUSPENDED,
            actor=acting(user, actor),
            reason=reason,
            action="client.suspend",
            hold=hold,
        )


@transaction.atomic
def client_resume(
    *, client: Client, user=None, actor: Actor | None = None, reason: str = "", now: dt.datetime | None = None
) -> Client:
    """Resume a suspended client; the IdP re-enables it (outbox UPDATE pushes the live state).

    A held client is refused for everyone (:class:`ClientHeld`): a hold is lifted through
    ``inventory.containment.client_hold_lift``, by security or an admin, with a reason.
    """
    locked = lock_client(client)
    require_manage(user, locked)
    if locked.hold_kind:
        raise ClientHeld(locked)
    now = now or timezone.now()
    check_transition(locked.state, ClientState.ACTIVE, locked)
    if locked.expires_at is not None and locked.expires_at <= now:
        raise LifecycleError("the client is past its expiry; it cannot be resumed")
    if locked.orphaned_at is not None:
        raise LifecycleError("the client is orphaned: transfer or take it over before resuming it")
    paused = suspended_ancestor(locked)
    if paused is not None:
        raise LifecycleError(f"its ancestor {paused.name} ({paused.registration_id}) is suspended: resume that first")
    result = client_transition(
        client=locked, target=ClientState.ACTIVE, actor=acting(user, actor), reason=reason, action="client.resume"
    )
    outbox_enqueue(client=result, operation=OutboxOperation.UPDATE)
    return result


# --- rotate key -----------------------------------------------------------------------------------


@transaction.atomic
def client_rotate_key(*, client: Client, jwks: Any, user=None, actor: Actor | None = None, reason: str = "") -> Client:
    """Replace the client's public JWKS and push it to the IdP (outbox UPDATE)."""
    locked = lock_client(client)
    require_manage(user, locked)
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"a {locked.state} client has no key to rotate")
    try:
        new_jwks = validate_public_jwks(jwks)  # the same rules as registration and RFC 7592 updates
    except KeySetError as exc:
        raise LifecycleError(str(exc)) from exc
    before = {"keys": jwks_thumbprints(locked.jwks), "jwks_uri": locked.jwks_uri}
    locked.jwks = new_jwks
    locked.jwks_uri = ""  # an uploaded JWKS replaces a JWKS URI (RFC 7591 §2: one or the other)
    if locked.auth_method == "client_secret_basic":
        locked.auth_method = "private_key_jwt"
    locked.save(update_fields=["jwks", "jwks_uri", "auth_method"])
    audit_record(
        actor=acting(user, actor),
        action="client.rotate_key",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after={"keys": jwks_thumbprints(new_jwks)},
        reason=reason,
        policy_version=locked.policy_version,
    )
    outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
    return locked
