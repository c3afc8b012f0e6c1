"""What the lifecycle refuses with: the errors every caller (views, API, approvals) catches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inventory.choices import HoldKind

if TYPE_CHECKING:  # pragma: no cover
    from inventory.models import Client


class LifecycleError(Exception):
    """A lifecycle rule refused the change (e.g. an illegal transition)."""


class IllegalTransition(LifecycleError):
    def __init__(self, client: Client | None, current: str, target: str):
        self.current, self.target = current, target
        name = f"client {client.registration_id}" if client is not None else "client"
        super().__init__(f"{name} cannot go from {current} to {target}")


class PermissionRefused(LifecycleError):
    """The person may not do this to this client."""


class ClientHeld(LifecycleError):
    """The client is under a hold that only security or an admin can lift."""

    def __init__(self, client: Client):
        self.client = client
        super().__init__(hold_description(client) + "; only security or an admin can lift the hold")


def hold_description(client: Client) -> str:
    """ "client reg_… is held (Break glass) by ciso on 2026-01-02 10:00 UTC: leaked token" — for errors and pages."""
    who = ""
    if client.hold_by_id is not None:
        person = client.hold_by
        who = f" by {person.get_username()}" if person is not None else ""
    when = f" on {client.hold_at:%Y-%m-%d %H:%M} UTC" if client.hold_at else ""
    kind = HoldKind(client.hold_kind).label if client.hold_kind in HoldKind.values else client.hold_kind
    why = f": {client.hold_reason}" if client.hold_reason else ""
    return f"client {client.registration_id} is held ({kind}){who}{when}{why}"
