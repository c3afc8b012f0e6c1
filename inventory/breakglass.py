"""Break glass and rollback: suspend or retire every live client in one blast radius, in one decision.

A *scope* names the blast radius: an owner, a team, an IdP, a lineage subtree, or everything created
under one initial access token, one trusted software-statement issuer, or one policy version (the
rollback after a token leak or a bad policy change). Descendants of matched clients are always
included: a leaked token's agents may have spawned children.

Token, issuer and policy links live on ``approvals.RegistrationRequest``; inventory reads them through
``apps.get_model`` because it never imports approvals code. The decision is ONE audit event
(``breakglass.<action>``) naming its many effects, plus the per-client transition events, and the IdP
follows through the outbox like every other change.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet

from inventory.choices import LIVE_STATES, ClientState
from inventory.lifecycle import LifecycleError, PermissionRefused, clients_transition_many, live_lineage_ids
from inventory.models import Client, IdPConnection, Team
from portal import roles
from portal.audit import Actor, audit_record

logger = logging.getLogger(__name__)

SCOPES = ("owner", "team", "idp", "lineage", "token", "issuer", "policy")
ACTIONS = {"suspend": ClientState.SUSPENDED, "retire": ClientState.RETIRED}
# Which live states each action can move (provisioning clients cannot be suspended, only ended).
ACTS_ON = {"suspend": {ClientState.ACTIVE}, "retire": set(LIVE_STATES)}


class BreakGlassError(LifecycleError):
    """Unknown scope or target, or a missing reason."""


@dataclass
class Preview:
    scope: str
    value: str
    label: str
    action: str
    by_state: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def affected(self) -> int:
        return sum(n for state, n in self.by_state.items() if state in ACTS_ON[self.action])

    @property
    def unaffected(self) -> int:
        return self.total - self.affected


@dataclass
class Outcome:
    decision_id: str
    action: str
    label: str
    transitioned: list[int]
    cascaded: list[int]

    @property
    def count(self) -> int:
        return len(self.transitioned) + len(self.cascaded)


def _request_model():
    return apps.get_model("approvals", "RegistrationRequest")


def _by_id_or(model, value: str, **lookup):
    obj = model.objects.filter(**lookup).first()
    if obj is None and value.isdigit():
        obj = model.objects.filter(pk=int(value)).first()
    return obj


def breakglass_scope(*, scope: str, value: str) -> tuple[QuerySet, str]:
    """The live clients a scope covers (with descendants) and a human label for it."""
    value = (value or "").strip()
    if scope not in SCOPES:
        raise BreakGlassError(f"unknown scope {scope!r}")
    if not value:
        raise BreakGlassError("say which one")
    if scope == "owner":
        target = _by_id_or(get_user_model(), value, username=value)
        roots, label = Client.objects.filter(owner=target), f"owner {getattr(target, 'username', '')}"
    elif scope == "team":
        target = _by_id_or(Team, value, slug=value)
        roots, label = Client.objects.filter(team=target), f"team {getattr(target, 'name', '')}"
    elif scope == "idp":
        target = _by_id_or(IdPConnection, value, name=value)
        roots, label = Client.objects.filter(idp=target), f"IdP {getattr(target, 'name', '')}"
    elif scope == "lineage":
        target = Client.objects.filter(registration_id=value).first()
        roots, label = Client.objects.filter(pk=getattr(target, "pk", None)), f"lineage of {value}"
    elif scope == "token":
        token_model = apps.get_model("approvals", "InitialAccessToken")
        target = _by_id_or(token_model, value, prefix=value)
        roots = Client.objects.filter(pk__in=_request_model().objects.filter(token=target).values("client_id"))
        label = f"initial access token {getattr(target, 'prefix', '')}…"
    elif scope == "issuer":
        issuer_model = apps.get_model("approvals", "TrustedIssuer")
        target = _by_id_or(issuer_model, value, name=value)
        roots = Client.objects.filter(pk__in=_request_model().objects.filter(issuer=target).values("client_id"))
        label = f"software-statement issuer {getattr(target, 'name', '')}"
    else:  # policy
        if not value.isdigit():
            raise BreakGlassError("a policy version is a number")
        target = int(value)
        via_requests = _request_model().objects.filter(policy_version=target, client__isnull=False)
        roots = Client.objects.filter(pk__in=via_requests.values("client_id")) | Client.objects.filter(
            policy_version=target
        )
        label = f"policy version {target}"
    if target is None:
        raise BreakGlassError(f"no {scope} matches {value!r}")
    ids = live_lineage_ids(list(roots.values_list("pk", flat=True)))
    return Client.objects.filter(pk__in=ids, state__in=LIVE_STATES), label


def breakglass_preview(*, user, scope: str, value: str, action: str) -> Preview:
    """How many clients the action would change (shown before the person confirms)."""
    if not roles.can_break_glass(user):
        raise PermissionRefused("break glass is for admins and security")
    if action not in ACTIONS:
        raise BreakGlassError(f"unknown action {action!r}")
    clients, label = breakglass_scope(scope=scope, value=value)
    counts = {}
    for state in clients.values_list("state", flat=True).order_by():
        counts[state] = counts.get(state, 0) + 1
    return Preview(scope=scope, value=value, label=label, action=action, by_state=counts)


@transaction.atomic
def breakglass_execute(*, user, scope: str, value: str, action: str, reason: str) -> Outcome:
    """Suspend or retire every live client in the scope: one decision event, per-client events, outbox rows."""
    if not roles.can_break_glass(user):
        raise PermissionRefused("break glass is for admins and security")
    if action not in ACTIONS:
        raise BreakGlassError(f"unknown action {action!r}")
    if not (reason or "").strip():
        raise BreakGlassError("break glass needs a reason")
    clients, label = breakglass_scope(scope=scope, value=value)
    # Block (not skip) on locked rows: break glass must get every client, even one a sweep holds.
    locked = [c for c in clients.select_for_update().order_by("pk") if c.state in ACTS_ON[action]]
    decision_id = "bg_" + secrets.token_urlsafe(9)
    actor = Actor.user(user)
    audit_record(
        actor=actor, action=f"breakglass.{action}", object_type="breakglass", object_id=decision_id,
        before=None,
        after={"scope": scope, "value": value, "label": label, "count": len(locked),
               "clients": [c.registration_id for c in locked]},
        reason=reason,
    )
    result = clients_transition_many(
        clients=locked, target=ACTIONS[action], actor=actor, reason=f"break glass {decision_id}: {reason}",
        action=f"client.{action}.breakglass",
    )
    logger.info("event=breakglass decision=%s action=%s scope=%s count=%s", decision_id, action, scope,
                len(result.transitioned))
    return Outcome(decision_id=decision_id, action=action, label=label, transitioned=result.transitioned,
                   cascaded=result.cascaded)
