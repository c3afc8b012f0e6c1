"""Holds: a suspension only security or an admin may lift.

A suspension by security or an admin (break glass, a security hold, an admin suspending someone else's
client) is a hold: ``client_transition`` refuses to make a held client active, so neither the owner's resume
nor any other path can undo it; only ``inventory.containment`` lifts it. A database constraint
(``client_held_not_active``) backs this up.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from inventory.choices import ClientState, HoldKind
from inventory.lifecycle.state import client_snapshot
from inventory.models import Client
from portal.audit import Actor, audit_record


@dataclass(frozen=True)
class Hold:
    """A suspension only security or an admin may lift. ``ref`` ties together every client one decision held
    (a break-glass decision id, or ``hold_…`` for a single hold), so lifting it can lift the whole subtree."""

    kind: str
    by_id: int | None
    reason: str
    ref: str = field(default_factory=lambda: "hold_" + secrets.token_urlsafe(9))

    def columns(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "hold_kind": self.kind,
            "hold_by_id": self.by_id,
            "hold_at": now,
            "hold_reason": self.reason[:2000],
            "hold_ref": self.ref[:64],
        }

    def for_descendants(self, ancestor: Client | None = None) -> Hold:
        """The hold a held client's descendants get: containment, same decision, naming the ancestor."""
        if self.kind == HoldKind.CONTAINMENT:
            return self
        named = f"ancestor {ancestor.registration_id}" if ancestor is not None else "an ancestor"
        return Hold(
            kind=HoldKind.CONTAINMENT, by_id=self.by_id, ref=self.ref, reason=f"{named} is held: {self.reason}"[:2000]
        )


HOLD_FIELDS = ("hold_kind", "hold_by", "hold_at", "hold_reason", "hold_ref")


def hold_in_place(client: Client, *, hold: Hold, actor: Actor, reason: str, action: str) -> bool:
    """In the caller's transaction: put a hold on an already-suspended client. Conditional: False when it is no
    longer suspended, or already held (the first hold stands)."""
    now = timezone.now()
    done = Client.objects.filter(pk=client.pk, state=ClientState.SUSPENDED, hold_kind="").update(**hold.columns(now))
    if done:
        before = client_snapshot(client)
        for name, value in hold.columns(now).items():
            setattr(client, name, value)
        audit_record(
            actor=actor,
            action=action,
            object_type="client",
            object_id=client.registration_id,
            before=before,
            after=client_snapshot(client),
            reason=f"{reason}: {hold.reason}"[:2000],
            policy_version=client.policy_version,
        )
    return bool(done)
