"""Enforcement: open compliance issues past their grace get their rule's action, once, through the lifecycle gate.

- ``notify``: one ``client.compliance_notify`` audit event; the owner gets one e-mail per pass listing them;
- ``suspend``: the client is suspended under a **policy hold** (``HoldKind.POLICY``; only security or an admin
  lifts it, ``inventory.containment``), live descendants with it — one ``client.policy_suspend`` event (also
  when its owner had already suspended it: the hold is added);
- ``retire``: retired (DELETE at the IdP), one ``client.policy_retire`` event.

Issues are taken in batches with ``FOR UPDATE SKIP LOCKED``, their clients locked, acted on set-based
(``clients_transition_many``: one UPDATE, one audit event per client, one outbox row each) and marked
``acted_at`` in the same transaction, so two workers or a re-run never act twice. Nothing happens while the
active policy is monitor only.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, HoldKind
from inventory.lifecycle import Hold, clients_transition_many
from inventory.lifecycle_policies.rules import LifecycleRules
from inventory.models import Client, ComplianceIssue
from portal.audit import Actor, audit_record_many
from portal.logs import log_event

logger = logging.getLogger(__name__)
ACTOR = Actor.system("lifecycle_policies")
BATCH = 500

RULE_TEXT = {
    "attestation": "not attested in time",
    "inactivity": "no use reported by the IdP",
    "sponsors": "fewer active sponsors than its tier needs",
}


@dataclass
class EnforceResult:
    acted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    monitor_only: bool = False

    @property
    def total(self) -> int:
        return sum(self.acted.values())


def _mail(owner_email: str, lines: list[str]) -> None:
    body = (
        "These clients you own are out of line with the lifecycle policy and its grace has ended:\n\n"
        + "\n".join(lines)
        + f"\n\nAttest the ones still needed: {settings.REGISTRAR_PUBLIC_URL}/inventory/mine/attest/\n"
    )
    send_mail(f"[Registrar] {len(lines)} client(s) need your attention", body, None, [owner_email])


def _reason(rules: LifecycleRules, rule: str) -> str:
    return f"lifecycle policy v{rules.version}: {rule} ({RULE_TEXT.get(rule, rule)}), grace ended"


def _act_on_batch(issues: list[ComplianceIssue], rules: LifecycleRules, now: dt.datetime, mail: dict) -> dict:
    """In the caller's transaction, with the issues locked: lock their clients, act set-based per (rule, action)
    through the lifecycle gate, mark every issue acted on. Returns {issue id: outcome}."""
    clients = {
        c.pk: c
        for c in Client.objects.select_for_update(of=("self",))
        .select_related("owner")
        .filter(pk__in=[i.client_id for i in issues])
        .order_by("pk")
    }
    outcomes: dict[int, str] = {}
    groups: dict[tuple[str, str], list[ComplianceIssue]] = defaultdict(list)
    for issue in issues:
        client = clients[issue.client_id]
        if client.state not in LIVE_STATES:
            outcomes[issue.pk] = "none (client ended)"
        elif issue.action == "suspend" and client.hold_kind:
            outcomes[issue.pk] = "none (already held)"
        else:
            groups[(issue.rule, issue.action)].append(issue)
    for (rule, action), group in groups.items():
        targets = [clients[i.client_id] for i in group]
        reason = _reason(rules, rule)
        if action in ("suspend", "retire"):
            hold = Hold(kind=HoldKind.POLICY, by_id=None, reason=reason) if action == "suspend" else None
            result = clients_transition_many(
                clients=targets,
                target=ClientState.SUSPENDED if action == "suspend" else ClientState.RETIRED,
                actor=ACTOR,
                reason=reason,
                action=f"client.policy_{action}",
                now=now,
                hold=hold,
                hold_action="client.policy_suspend",
            )
            done = set(result.transitioned) | set(result.held)
            verb = "suspended" if action == "suspend" else "retired"
            for issue in group:
                outcomes[issue.pk] = verb if issue.client_id in done else "refused by the lifecycle gate"
            continue
        audit_record_many(
            [
                {
                    "actor": ACTOR,
                    "action": "client.compliance_notify",
                    "object_type": "client",
                    "object_id": clients[i.client_id].registration_id,
                    "after": {"rule": rule, "since": i.since.isoformat(), "owner": clients[i.client_id].owner_id},
                    "reason": reason,
                    "policy_version": clients[i.client_id].policy_version,
                }
                for i in group
            ]
        )
        for issue in group:
            outcomes[issue.pk] = "notified"
            client = clients[issue.client_id]
            if client.owner is not None and client.owner.email:
                mail[client.owner.email].append(f"  • {client.name} ({client.registration_id}): {rule}")
    by_outcome: dict[str, list[int]] = defaultdict(list)
    for issue_id, outcome in outcomes.items():
        by_outcome[outcome].append(issue_id)
    for outcome, ids in by_outcome.items():
        ComplianceIssue.objects.filter(pk__in=ids).update(acted_at=now, resolution=outcome[:64])
    return outcomes


def enforce(rules: LifecycleRules, *, now: dt.datetime | None = None, limit: int | None = None) -> EnforceResult:
    """Act on every open issue whose grace has ended at ``now``: batches of ``BATCH`` issues, each batch one
    transaction (issues ``FOR UPDATE SKIP LOCKED``, then their clients), set-based through the lifecycle gate."""
    now = now or timezone.now()
    result = EnforceResult(monitor_only=rules.monitor_only)
    if rules.monitor_only:
        return result
    mail: dict[str, list[str]] = defaultdict(list)
    while limit is None or result.total < limit:
        size = BATCH if limit is None else min(BATCH, limit - result.total)
        with transaction.atomic():
            issues = list(
                ComplianceIssue.objects.select_for_update(skip_locked=True)
                .filter(resolved_at__isnull=True, acted_at__isnull=True, action_due_at__lte=now)
                .order_by("id")[:size]
            )
            if not issues:
                break
            _act_on_batch(issues, rules, now, mail)
        for issue in issues:
            result.acted[issue.rule] += 1
    for email, lines in mail.items():
        transaction.on_commit(functools.partial(_mail, email, lines))
    log_event(logger, "lifecycle_enforce", acted=dict(result.acted))
    return result
