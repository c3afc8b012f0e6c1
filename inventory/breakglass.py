"""Break glass and rollback: contain every live client in one blast radius, in one decision.

A *scope* names the blast radius: an owner, a team, an IdP, a lineage subtree, or everything created
under one initial access token, one trusted software-statement issuer, or one policy version (the
rollback after a token leak or a bad policy change). Descendants of matched clients are always
included: a leaked token's agents may have spawned children.

Containment means containment:

* **suspend** is a *hold* (``inventory.containment``): only security or an admin can lift it, never the
  owner. Clients already suspended by their owner are held as well, and provisioning ones are suspended
  (their IdP DISABLE follows their CREATE), so nothing in the scope can come back by itself.
* the credential behind the scope stops working: by token, the token is revoked; by issuer, the issuer is
  disabled (and their pending requests withdrawn); by lineage, the root loses its right to spawn children.

Token, issuer and policy scopes belong to approvals: it registers them as containment scopes
(``inventory.hooks``), each resolving to the clients it covers plus the effects confirming has. The preview
says all of it before anything changes. The decision is ONE audit event (``breakglass.<action>``) naming
its effects, plus the per-client events and each effect's own event; the IdP follows through the outbox.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet

from inventory import hooks
from inventory.choices import LIVE_STATES, ClientState, HoldKind
from inventory.containment import client_spawn_revoke
from inventory.lifecycle import Hold, LifecycleError, PermissionRefused, clients_transition_many, live_lineage_ids
from inventory.models import Client, IdPConnection, Team
from portal import roles
from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)

SCOPES = ("owner", "team", "idp", "lineage", "token", "issuer", "policy")
ACTIONS = {"suspend": ClientState.SUSPENDED, "retire": ClientState.RETIRED}
# Which live states each action moves. Suspend also puts its hold on clients already suspended.
ACTS_ON = {"suspend": {ClientState.ACTIVE, ClientState.PROVISIONING}, "retire": set(LIVE_STATES)}


class BreakGlassError(LifecycleError):
    """Unknown scope or target, or a missing reason."""


@dataclass
class Resolved:
    """A scope resolved: the matched clients (before descendants) and what else confirming does."""

    label: str
    root_ids: list[int]
    effects: list[str] = field(default_factory=list)
    apply: Callable[[Actor, str], None] | None = None


@dataclass
class Preview:
    scope: str
    value: str
    label: str
    action: str
    by_state: dict[str, int] = field(default_factory=dict)
    matched: int = 0  # live clients the scope names directly
    descendants: int = 0  # live descendants included because an ancestor is in scope
    already_held: int = 0
    effects: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def affected(self) -> int:
        """Clients whose state changes."""
        return sum(n for state, n in self.by_state.items() if state in ACTS_ON[self.action])

    @property
    def to_hold(self) -> int:
        """Suspend only: clients already suspended (by their owner) that get the hold, so it cannot be undone."""
        if self.action != "suspend":
            return 0
        return max(0, self.by_state.get(ClientState.SUSPENDED, 0) - self.already_held)

    @property
    def unaffected(self) -> int:
        return self.total - self.affected - self.to_hold

    @property
    def anything(self) -> bool:
        return bool(self.affected or self.to_hold or self.effects)


@dataclass
class Outcome:
    decision_id: str
    action: str
    label: str
    transitioned: list[int]
    cascaded: list[int]
    held: list[int] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.transitioned) + len(self.cascaded)


def _by_id_or(model, value: str, **lookup):
    obj = model.objects.filter(**lookup).first()
    if obj is None and value.isdigit():
        obj = model.objects.filter(pk=int(value)).first()
    return obj


def _ids(queryset) -> list[int]:
    return list(queryset.values_list("pk", flat=True))


def _resolve(scope: str, value: str) -> Resolved:
    value = (value or "").strip()
    if scope not in SCOPES:
        raise BreakGlassError(f"unknown scope {scope!r}")
    if not value:
        raise BreakGlassError("say which one")
    if scope == "owner":
        target = _by_id_or(get_user_model(), value, username=value)
        resolved = target and Resolved(f"owner {target.username}", _ids(Client.objects.filter(owner=target)))
    elif scope == "team":
        target = _by_id_or(Team, value, slug=value)
        resolved = target and Resolved(f"team {target.name}", _ids(Client.objects.filter(team=target)))
    elif scope == "idp":
        target = _by_id_or(IdPConnection, value, name=value)
        resolved = target and Resolved(f"IdP {target.name}", _ids(Client.objects.filter(idp=target)))
    elif scope == "lineage":
        resolved = _resolve_lineage(value)
    else:
        resolver = hooks.containment_resolver(scope)
        if resolver is None:
            raise BreakGlassError(f"scope {scope!r} is not available (the approvals app is not installed)")
        try:
            target = resolver(value)
        except ValueError as exc:
            raise BreakGlassError(str(exc))
        resolved = target and Resolved(target.label, list(target.client_ids), list(target.effects), target.apply)
    if not resolved:
        raise BreakGlassError(f"no {scope} matches {value!r}")
    return resolved


def _resolve_lineage(value: str) -> Resolved | None:
    root = Client.objects.filter(registration_id=value).first()
    if root is None:
        return None
    if root.spawn_revoked_at is not None:
        effects = [f"{root.name} ({root.registration_id}) already has no right to spawn children"]
    else:
        effects = [
            f"revoke the spawn right of {root.name} ({root.registration_id}): its registration access "
            f"token can register no more children ({root.children_spawned} spawned so far)"
        ]

    def apply(actor: Actor, reason: str) -> None:
        client_spawn_revoke(client=root, actor=actor, reason=reason)

    return Resolved(f"lineage of {value}", [root.pk], effects, apply)


def breakglass_scope(*, scope: str, value: str) -> tuple[QuerySet, str]:
    """The live clients a scope covers (with descendants) and a human label for it."""
    resolved = _resolve(scope, value)
    return _live_in_scope(resolved), resolved.label


def _live_in_scope(resolved: Resolved) -> QuerySet:
    return Client.objects.filter(pk__in=live_lineage_ids(resolved.root_ids), state__in=LIVE_STATES)


def _check(user, action: str) -> None:
    if not roles.can_break_glass(user):
        raise PermissionRefused("break glass is for admins and security")
    if action not in ACTIONS:
        raise BreakGlassError(f"unknown action {action!r}")


def breakglass_preview(*, user, scope: str, value: str, action: str) -> Preview:
    """What confirming would do (shown before the person confirms): counts per state, how many are matched
    directly and how many come in as descendants, and every effect beyond the clients."""
    _check(user, action)
    resolved = _resolve(scope, value)
    roots = set(resolved.root_ids)
    preview = Preview(scope=scope, value=value, label=resolved.label, action=action, effects=list(resolved.effects))
    for pk, state, hold_kind in _live_in_scope(resolved).values_list("pk", "state", "hold_kind").order_by():
        preview.by_state[state] = preview.by_state.get(state, 0) + 1
        if pk in roots:
            preview.matched += 1
        else:
            preview.descendants += 1
        if state == ClientState.SUSPENDED and hold_kind:
            preview.already_held += 1
    return preview


@transaction.atomic
def breakglass_execute(*, user, scope: str, value: str, action: str, reason: str) -> Outcome:
    """Contain every live client in the scope: one decision event, per-client events and outbox rows, and the
    scope's own effects (token revoked, issuer disabled, spawn right revoked), all in one transaction."""
    _check(user, action)
    reason = (reason or "").strip()
    if not reason:
        raise BreakGlassError("break glass needs a reason")
    resolved = _resolve(scope, value)
    # Block (not skip) on locked rows: break glass must get every client, even one a sweep holds.
    locked = list(_live_in_scope(resolved).select_for_update().order_by("pk"))
    decision_id = "bg_" + secrets.token_urlsafe(9)
    actor = Actor.user(user)
    roots = set(resolved.root_ids)
    audit_record(
        actor=actor,
        action=f"breakglass.{action}",
        object_type="breakglass",
        object_id=decision_id,
        before=None,
        after={
            "scope": scope,
            "value": value,
            "label": resolved.label,
            "count": len(locked),
            "clients": [c.registration_id for c in locked],
            "descendants": [c.registration_id for c in locked if c.pk not in roots],
            "effects": resolved.effects,
        },
        reason=reason,
    )
    why = f"break glass {decision_id}: {reason}"
    hold = Hold(kind=HoldKind.BREAK_GLASS, by_id=user.pk, reason=why, ref=decision_id) if action == "suspend" else None
    result = clients_transition_many(
        clients=locked,
        target=ACTIONS[action],
        actor=actor,
        reason=why,
        action=f"client.{action}.breakglass",
        hold=hold,
        hold_action="client.hold.breakglass",
    )
    if resolved.apply is not None:
        resolved.apply(actor, why)
    log_event(
        logger,
        "breakglass",
        decision=decision_id,
        action=action,
        scope=scope,
        count=len(result.transitioned),
        held=len(result.held),
        effects=len(resolved.effects),
    )
    return Outcome(
        decision_id=decision_id,
        action=action,
        label=resolved.label,
        transitioned=result.transitioned,
        cascaded=result.cascaded,
        held=result.held,
        effects=list(resolved.effects),
    )
