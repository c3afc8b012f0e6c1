"""Renewals and the approved ceiling they are held to.

A client carries what its last approval granted (``ceiling_*`` fields). A renewal inside that ceiling is
direct for low and medium tier; anything beyond it, every high-tier renewal and any client flagged stale or
orphaned goes back to review: the approvals app files the renewal request through the hook it registers
(``inventory.hooks.renewal_review_file``), and calls :func:`client_apply_renewal` once people approved it —
which also narrows scopes and sets the new ceiling.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory import hooks
from inventory.ceilings import Ceiling
from inventory.choices import ClientState, CreatedVia, OutboxOperation, RiskTier
from inventory.lifecycle.errors import LifecycleError
from inventory.lifecycle.state import acting, client_snapshot, lock_client, require_manage
from inventory.models import Client
from inventory.outbox import outbox_enqueue
from portal.audit import Actor, audit_record


def tier_ttl_ceiling(risk_tier: str) -> int:
    """The tier's TTL ceiling (seconds) under the active policy (``inventory.hooks.policy_limits``)."""
    return hooks.policy_limits().ttl_ceiling(risk_tier)


def client_ceiling(client: Client) -> Ceiling | None:
    """The ceiling the client's last approval granted, or None when no approval is on record."""
    return Ceiling.of(
        scopes=client.ceiling_scopes, ttl_seconds=client.ceiling_ttl_seconds, audiences=client.ceiling_audiences
    )


@dataclass
class RenewalOutcome:
    """What :func:`client_renew` did: renewed ``client`` (the updated row), or filed ``reg_request`` for review."""

    client: Client
    renewed: bool
    reg_request: Any = None  # the approvals app's renewal RegistrationRequest when the renewal needs review

    @property
    def needs_review(self) -> bool:
        return self.reg_request is not None


def renewal_review_reasons(client: Client, *, ttl_seconds: int) -> list[tuple[str, str]]:
    """Why renewing ``client`` for ``ttl_seconds`` needs people ([] when it may be direct)."""
    reasons: list[tuple[str, str]] = []
    if client.risk_tier == RiskTier.HIGH:
        reasons.append(("high_tier_renewal", "high-risk tier: every renewal needs a new approval"))
    if client.stale_at is not None:
        reasons.append(("flagged_stale", "flagged stale (unused)"))
    if client.orphaned_at is not None:
        reasons.append(("orphaned", "orphaned (owner left)"))
    ceiling = client_ceiling(client)
    if ceiling is None:
        reasons.append(("no_approved_ceiling", "no approval on record for this client"))
    else:
        reasons.extend(
            ceiling.excesses(scopes=client.scopes or (), ttl_seconds=ttl_seconds, audiences=client.audiences or ())
        )
    return reasons


def renewal_needs_review(client: Client, *, ttl_seconds: int | None = None) -> bool:
    """High tier, stale, orphaned, no approval on record, or beyond the approved ceiling."""
    return bool(renewal_review_reasons(client, ttl_seconds=_renewal_ttl(client, ttl_seconds)))


def _renewal_ttl(client: Client, ttl_seconds: int | None, limits: hooks.PolicyLimits | None = None) -> int:
    """The lifetime a renewal asks for: what the person asked, else the approved one; never beyond the tier."""
    tier_cap = (limits or hooks.policy_limits()).ttl_ceiling(client.risk_tier)
    ceiling = client_ceiling(client)
    wanted = ttl_seconds or (ceiling.ttl_seconds if ceiling is not None else tier_cap)
    return min(wanted, tier_cap)


@transaction.atomic
def client_renew(
    *,
    client: Client,
    user=None,
    actor: Actor | None = None,
    ttl_seconds: int | None = None,
    reason: str = "",
    now: dt.datetime | None = None,
) -> RenewalOutcome:
    """Extend ``expires_at`` to now + the approved lifetime, or file a renewal for review.

    The lifetime is what the person asked for, else the one the last approval granted (``ceiling_ttl_seconds``),
    never more than the active policy's tier ceiling. Direct for low and medium tier when that stays inside the
    approved ceiling; otherwise — beyond the ceiling, high tier, flagged stale or orphaned, or no approval on
    record — the approvals app files a pending renewal request (the hook it registered) that needs a new
    approval of the same tier, and the client is left as it is until people approve it.
    """
    locked = lock_client(client)
    require_manage(user, locked)
    who = acting(user, actor)
    if locked.state != ClientState.ACTIVE:
        raise LifecycleError(f"only an active client can be renewed (this one is {locked.state})")
    if ttl_seconds is not None and (type(ttl_seconds) is not int or ttl_seconds <= 0):
        raise LifecycleError("the renewal lifetime must be a positive number of seconds")
    now = now or timezone.now()
    limits = hooks.policy_limits()
    ttl = _renewal_ttl(locked, ttl_seconds, limits)
    reasons = renewal_review_reasons(locked, ttl_seconds=ttl)
    if reasons:
        reg_request = _file_renewal_review(locked, who, ttl, reasons, reason, limits)
        return RenewalOutcome(client=locked, renewed=False, reg_request=reg_request)
    before = client_snapshot(locked)
    locked.expires_at = now + dt.timedelta(seconds=ttl)
    locked.renewals += 1
    locked.save(update_fields=["expires_at", "renewals"])
    audit_record(
        actor=who,
        action="client.renew",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked) | {"ttl_seconds": ttl},
        reason=reason,
        policy_version=locked.policy_version,
    )
    return RenewalOutcome(client=locked, renewed=True)


@transaction.atomic
def client_extend_on_use(
    *, client: Client, used_at: dt.datetime, window: dt.timedelta, actor: Actor, now: dt.datetime | None = None
) -> Client | None:
    """An anonymous client that is used does not expire (docs/mcp.md "Expire unless used"): renew it through
    :func:`client_renew` to its use + its approved lifetime (the profile's, never more than the tier ceiling),
    at most once per ``window`` — a use that would move the expiry by less than ``window`` changes nothing, so
    a busy client is renewed once per window, not once per report. Only a direct renewal: a client that would
    need review (high tier, flagged, no ceiling) is left to expire. The renewed client, or None."""
    locked = lock_client(client)
    if locked.state != ClientState.ACTIVE or locked.created_via != CreatedVia.ANONYMOUS:
        return None
    now = now or timezone.now()
    used_at = min(used_at, now)  # a report from a skewed clock never buys more than the lifetime from now
    ttl = _renewal_ttl(locked, None)
    if renewal_review_reasons(locked, ttl_seconds=ttl):
        return None
    if locked.expires_at is not None and used_at + dt.timedelta(seconds=ttl) < locked.expires_at + window:
        return None
    outcome = client_renew(
        client=locked,
        actor=actor,
        reason=f"used at {used_at.isoformat()}: an anonymous client expires unless used",
        now=used_at,
    )
    return outcome.client if outcome.renewed else None


@transaction.atomic
def client_apply_renewal(
    *,
    client: Client,
    ttl_seconds: int,
    actor: Actor,
    reason: str = "",
    scopes: list[str] | None = None,
    audiences: list[str] | None = None,
    policy_version: int | None = None,
    now: dt.datetime | None = None,
) -> Client:
    """Extend a client once people approved its renewal (called by the approvals app), and record what they
    approved as its new ceiling.

    ``scopes`` are the approved scopes: an approver who narrowed them narrows the client (outbox UPDATE to
    the IdP); they can never widen it. The lifetime is clamped to the tier ceiling; the stale flag clears
    (someone vouched for it) and the orphan flag clears only if the client has an active owner again.
    """
    locked = lock_client(client)
    if locked.state != ClientState.ACTIVE:
        raise LifecycleError(f"only an active client can be renewed (this one is {locked.state})")
    if type(ttl_seconds) is not int or ttl_seconds <= 0:
        raise LifecycleError("the renewal lifetime must be a positive number of seconds")
    held = list(locked.scopes or ())
    approved_scopes = held if scopes is None else sorted(set(scopes))
    if not approved_scopes:
        raise LifecycleError("a renewal must keep at least one scope; retire the client instead")
    wider = sorted(set(approved_scopes) - set(held))
    previous = client_ceiling(locked)
    if wider and (previous is None or set(wider) - previous.scopes):
        raise LifecycleError("a renewal may only narrow scopes; not held: " + ", ".join(wider))
    if audiences is not None:
        allowed = set(locked.audiences or ()) | (previous.audiences if previous is not None else set())
        outside = sorted(set(audiences) - allowed)
        if outside:
            raise LifecycleError("a renewal may only narrow audiences; not granted: " + ", ".join(outside))
    now = now or timezone.now()
    ttl = min(ttl_seconds, tier_ttl_ceiling(locked.risk_tier))
    before = client_snapshot(locked) | {
        "stale_at": locked.stale_at,
        "orphaned_at": locked.orphaned_at,
        "ceiling": previous.to_dict() if previous else None,
    }
    narrowed = [s for s in held if s in approved_scopes]
    scopes_changed = narrowed != held
    locked.scopes = narrowed
    locked.expires_at = now + dt.timedelta(seconds=ttl)
    locked.renewals += 1
    locked.stale_at = None
    if locked.owner is not None and locked.owner.is_active:
        locked.orphaned_at = None
    ceiling = Ceiling.of(
        scopes=approved_scopes, ttl_seconds=ttl, audiences=locked.audiences if audiences is None else audiences
    )
    assert ceiling is not None  # approved_scopes is non-empty and a renewal's TTL positive
    _set_ceiling(locked, ceiling)
    locked.save(
        update_fields=[
            "scopes",
            "expires_at",
            "renewals",
            "stale_at",
            "orphaned_at",
            "ceiling_scopes",
            "ceiling_ttl_seconds",
            "ceiling_audiences",
        ]
    )
    audit_record(
        actor=actor,
        action="client.renew.approved",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked)
        | {"ttl_seconds": ttl, "ceiling": ceiling.to_dict(), "narrowed_scopes": sorted(set(held) - set(narrowed))},
        reason=reason,
        policy_version=policy_version if policy_version is not None else locked.policy_version,
    )
    if scopes_changed:
        outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
    return locked


def _set_ceiling(client: Client, ceiling: Ceiling) -> None:
    client.ceiling_scopes = sorted(ceiling.scopes)
    client.ceiling_ttl_seconds = ceiling.ttl_seconds
    client.ceiling_audiences = sorted(ceiling.audiences)


def _file_renewal_review(
    client: Client, actor: Actor, ttl: int, reasons: list[tuple[str, str]], note: str, limits: hooks.PolicyLimits
):
    review = hooks.RenewalReview(
        client=client,
        actor=actor,
        ttl_seconds=ttl,
        reasons=tuple(reasons),
        approvals_needed=limits.approvals_for(client.risk_tier),
        note=note,
    )
    try:
        reg_request = hooks.renewal_review_file(review)
    except hooks.RenewalConflict as exc:
        raise LifecycleError(str(exc) or f"a renewal of {client.registration_id} is already waiting for review")
    except hooks.HookMissing as exc:
        raise LifecycleError(str(exc))
    audit_record(
        actor=actor,
        action="client.renewal_requested",
        object_type="client",
        object_id=client.registration_id,
        before=client_snapshot(client),
        after={
            "request": reg_request.public_id,
            "ttl_seconds": ttl,
            "why": [message for _code, message in reasons],
            "approvals_needed": review.approvals_needed,
            "ceiling": ceiling.to_dict() if (ceiling := client_ceiling(client)) else None,
        },
        reason=note,
        policy_version=client.policy_version,
    )
    return reg_request
