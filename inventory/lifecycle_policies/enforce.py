"""Enforcement: open compliance issues past their grace get their rule's action, once, through the lifecycle gate.

- ``notify``: one ``client.compliance_notify`` audit event; the owner gets one e-mail per pass listing them;
- ``suspend``: the client is suspended under a **policy hold** (``HoldKind.POLICY``; only security or an admin
  lifts it, ``inventory.containment``), live descendants with it — ``client_transition``'s one audit event
  ``client.policy_suspend`` (or ``hold_in_place`` when its owner had already suspended it);
- ``retire``: ``client_transition`` to retired (DELETE at the IdP), ``client.policy_retire``.

Each issue is taken with ``FOR UPDATE SKIP LOCKED`` and marked ``acted_at`` in the same transaction as its
action, so two workers or a re-run never act twice. Nothing happens while the active policy is monitor only.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState, HoldKind
from inventory.lifecycle import Hold, LifecycleError, client_transition, hold_in_place
from inventory.lifecycle_policies.rules import LifecycleRules
from inventory.models import Client, ComplianceIssue
from portal.audit import Actor, audit_record

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


def _act(issue: ComplianceIssue, client: Client, rules: LifecycleRules, now: dt.datetime) -> str:
    """Apply the issue's action to the locked ``client``; what was done."""
    reason = (
        f"lifecycle policy v{rules.version}: {issue.rule} ({RULE_TEXT.get(issue.rule, issue.rule)}) since "
        f"{issue.since:%Y-%m-%d}, grace ended {issue.action_due_at:%Y-%m-%d}"
    )
    if client.state not in LIVE_STATES:
        return "none (client ended)"
    if issue.action == "retire":
        client_transition(
            client=client, target=ClientState.RETIRED, actor=ACTOR, reason=reason, action="client.policy_retire"
        )
        return "retired"
    if issue.action == "suspend":
        hold = Hold(kind=HoldKind.POLICY, by_id=None, reason=reason)
        if client.hold_kind:
            return "none (already held)"
        if client.state == ClientState.SUSPENDED:
            hold_in_place(client, hold=hold, actor=ACTOR, reason="policy hold", action="client.policy_suspend")
            return "held"
        client_transition(
            client=client,
            target=ClientState.SUSPENDED,
            actor=ACTOR,
            reason=reason,
            action="client.policy_suspend",
            hold=hold,
        )
        return "suspended"
    audit_record(
        actor=ACTOR,
        action="client.compliance_notify",
        object_type="client",
        object_id=client.registration_id,
        after={"rule": issue.rule, "since": issue.since.isoformat(), "owner": client.owner_id},
        reason=reason,
        policy_version=client.policy_version,
    )
    return "notified"


def _mail(owner_email: str, lines: list[str]) -> None:
    body = (
        "These clients you own are out of line with the lifecycle policy and its grace has ended:\n\n"
        + "\n".join(lines)
        + f"\n\nAttest the ones still needed: {settings.REGISTRAR_PUBLIC_URL}/inventory/mine/attest/\n"
    )
    send_mail(f"[Registrar] {len(lines)} client(s) need your attention", body, None, [owner_email])


def enforce(rules: LifecycleRules, *, now: dt.datetime | None = None, limit: int | None = None) -> EnforceResult:
    """Act on every open issue whose grace has ended at ``now`` (one transaction per issue)."""
    now = now or timezone.now()
    result = EnforceResult(monitor_only=rules.monitor_only)
    if rules.monitor_only:
        return result
    mail: dict[str, list[str]] = defaultdict(list)
    last_id = 0
    done = 0
    while limit is None or done < limit:
        ids = list(
            ComplianceIssue.objects.filter(
                resolved_at__isnull=True, acted_at__isnull=True, action_due_at__lte=now, id__gt=last_id
            )
            .order_by("id")
            .values_list("id", flat=True)[:BATCH]
        )
        if not ids:
            break
        for issue_id in ids:
            last_id = issue_id
            with transaction.atomic():
                issue = (
                    ComplianceIssue.objects.select_for_update(skip_locked=True)
                    .filter(pk=issue_id, resolved_at__isnull=True, acted_at__isnull=True)
                    .first()
                )
                if issue is None:
                    continue  # another worker has it, or it was resolved meanwhile
                client = Client.objects.select_for_update(of=("self",)).select_related("owner").get(pk=issue.client_id)
                try:
                    outcome = _act(issue, client, rules, now)
                except LifecycleError as refused:
                    outcome = f"refused: {refused}"[:64]
                ComplianceIssue.objects.filter(pk=issue.pk).update(acted_at=now, resolution=outcome[:64])
                if outcome == "notified" and client.owner is not None and client.owner.email:
                    mail[client.owner.email].append(f"  • {client.name} ({client.registration_id}): {issue.rule}")
            result.acted[issue.rule] += 1
            done += 1
            if limit is not None and done >= limit:
                break
    for email, lines in mail.items():
        transaction.on_commit(lambda email=email, lines=lines: _mail(email, lines))
    logger.info("event=lifecycle_enforce acted=%s", dict(result.acted))
    return result
