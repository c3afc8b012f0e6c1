"""Enforcement: open compliance issues past their grace get their rule's action, once, through the lifecycle gate.

- ``notify``: one ``client.compliance_notify`` audit event; the owner gets one e-mail per pass listing them;
- ``suspend``: the client is suspended under a **policy hold** (``HoldKind.POLICY``; only security or an admin
  lifts it, ``inventory.containment``), live descendants with it — one ``client.policy_suspend`` event (also
  when its owner had already suspended it: the hold is added);
- ``retire``: retired (DELETE at the IdP), one ``client.policy_retire`` event.

Issues are taken in batches of ``REGISTRAR_SWEEP_BATCH_SIZE`` (the sweeps' knob) with their clients in one
``SELECT … FOR UPDATE OF issue, client SKIP LOCKED`` — only the columns a transition reads, like the sweeps —
acted on set-based through the same gate the expiry sweep uses (``clients_transition_many``: one UPDATE, one
audit event per client, one outbox row each) and marked ``acted_at`` in the same transaction, so two workers or a
re-run never act twice. A pass costs a fixed number of statements per batch, whatever the batch holds. Nothing
happens while the active policy is monitor only.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, HoldKind
from inventory.lifecycle import TRANSITION_FIELDS, Hold, clients_transition_many, outbox_nudge
from inventory.lifecycle_policies.rules import LifecycleRules
from inventory.models import Client, ComplianceIssue
from portal.audit import Actor, audit_record_many
from portal.logs import log_event

logger = logging.getLogger(__name__)
ACTOR = Actor.system("lifecycle_policies")

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


# The client columns a batch reads: what a transition reads (the sweeps' list) and the name for the owner's mail.
CLIENT_FIELDS = (*TRANSITION_FIELDS, "name")


def _lock_due(now: dt.datetime, size: int) -> list[ComplianceIssue]:
    """Up to ``size`` open issues due at ``now``, longest due first, each with its client, both locked in one
    statement; rows another transaction holds (an issue, or its client) are skipped and left for the next pass.
    Ordered as the partial index ``compliance_due_idx`` is, which holds only issues not yet acted on: each batch
    reads its own rows, not the ones earlier batches acted on (by id, batch k would step over k × size rows)."""
    return list(
        ComplianceIssue.objects.select_for_update(skip_locked=True, of=("self", "client"))
        .select_related("client")
        .only("id", "client_id", "rule", "action", "since", *(f"client__{name}" for name in CLIENT_FIELDS))
        .filter(resolved_at__isnull=True, acted_at__isnull=True, action_due_at__lte=now)
        .order_by("action_due_at", "id")[:size]
    )


def _owner_emails(clients: list[Client]) -> dict[int, str]:
    owner_ids = {c.owner_id for c in clients if c.owner_id is not None}
    users = get_user_model().objects.filter(pk__in=owner_ids).exclude(email="")
    return dict(users.values_list("pk", "email"))


def _act_on_batch(issues: list[ComplianceIssue], rules: LifecycleRules, now: dt.datetime, mail: dict) -> bool:
    """In the caller's transaction, with the issues and their clients locked: act set-based per (rule, action)
    through the lifecycle gate, mark every issue acted on. Returns whether any change was queued for an IdP."""
    # One instance per client: a client due under two rules is acted on by the second with the state the first
    # left it in (suspended by one, retired by the other: two events, as if one after the other).
    clients: dict[int, Client] = {}
    for issue in issues:
        clients.setdefault(issue.client_id, issue.client)
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
    pushed = False
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
                nudge=False,  # one nudge per pass, after its last batch (see enforce)
                hold=hold,
                hold_action="client.policy_suspend",
            )
            pushed = pushed or bool(result.transitioned)
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
        emails = _owner_emails(targets)
        for issue in group:
            outcomes[issue.pk] = "notified"
            client = clients[issue.client_id]
            if client.owner_id in emails:
                mail[emails[client.owner_id]].append(f"  • {client.name} ({client.registration_id}): {rule}")
    by_outcome: dict[str, list[int]] = defaultdict(list)
    for issue_id, outcome in outcomes.items():
        by_outcome[outcome].append(issue_id)
    for outcome, ids in by_outcome.items():
        ComplianceIssue.objects.filter(pk__in=ids).update(acted_at=now, resolution=outcome[:64])
    return pushed


def enforce(
    rules: LifecycleRules, *, now: dt.datetime | None = None, limit: int | None = None, batch_size: int | None = None
) -> EnforceResult:
    """Act on every open issue whose grace has ended at ``now``: batches of ``batch_size`` issues (default
    ``REGISTRAR_SWEEP_BATCH_SIZE``), each batch one transaction, set-based through the lifecycle gate."""
    now = now or timezone.now()
    result = EnforceResult(monitor_only=rules.monitor_only)
    if rules.monitor_only:
        return result
    batch = batch_size or settings.REGISTRAR_SWEEP_BATCH_SIZE
    mail: dict[str, list[str]] = defaultdict(list)
    pushed = False
    while limit is None or result.total < limit:
        size = batch if limit is None else min(batch, limit - result.total)
        with transaction.atomic():
            issues = _lock_due(now, size)
            if not issues:
                break
            pushed = _act_on_batch(issues, rules, now, mail) or pushed
        for issue in issues:
            result.acted[issue.rule] += 1
    if pushed:
        # The outbox rows are committed with their batches; one nudge tells the workers (beat's requeue_outbox
        # finds them anyway if the broker is down).
        transaction.on_commit(outbox_nudge)
    for email, lines in mail.items():
        transaction.on_commit(functools.partial(_mail, email, lines))
    log_event(logger, "lifecycle_enforce", acted=dict(result.acted))
    return result
