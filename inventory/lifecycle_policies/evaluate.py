"""Which clients each rule flags, the what-if preview, and the flagging pass that keeps compliance issues current.

A rule applies to **active, managed** clients in its scope:

- attestation: not attested for the tier's N days, counted from the last attestation, else activation, else
  creation. The issue is open *since* that date + N;
- inactivity: no use reported for N days (``last_used_at``, else activation, else creation; usage comes from
  the IdPs, ``inventory.usage``). Open *since* that date + N; the client's ``stale_at`` follows this rule;
- sponsors: fewer active sponsors than the tier's minimum — its owner if active, plus co-sponsors who accepted
  and are active (``ClientSponsor``). Open since it was first flagged.

An issue's action is due ``grace_days`` after it was flagged, or after it began if that is later: a policy
published today gives every long-overdue client the full grace before anything happens. The preview computes the
same sets as the flagging pass, from the same querysets, so its numbers are what enforcement then does.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import (
    Case,
    Count,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest
from django.db.models.lookups import GreaterThan, LessThan
from django.utils import timezone

from inventory.choices import LIVE_STATES, ClientState
from inventory.lifecycle_policies.rules import ATTESTATION, INACTIVITY, SPONSORS, LifecycleRules, Rule
from inventory.models import Client, ClientSponsor, ComplianceIssue, SponsorState
from portal.audit import Actor, audit_record_many

BASE = {
    ATTESTATION: ("attested_at", "activated_at", "created_at"),
    INACTIVITY: ("last_used_at", "activated_at", "created_at"),
    SPONSORS: ("activated_at", "created_at"),
}


def active_co_sponsor_count():
    """Per client: its accepted co-sponsors who are active (one scalar subquery, 0 when none)."""
    co_sponsors = (
        ClientSponsor.objects.filter(client=OuterRef("pk"), state=SponsorState.ACTIVE, user__is_active=True)
        .order_by()
        .values("client")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(co_sponsors, output_field=IntegerField()), Value(0))


def owner_sponsors():
    """Per client: 1 if its owner is active (the owner is its first sponsor), else 0."""
    return Case(When(owner__is_active=True, then=Value(1)), default=Value(0), output_field=IntegerField())


def short_of_sponsors(tier: str, minimum: int) -> Q:
    """Clients of ``tier`` with fewer active sponsors than ``minimum``. Written so the database counts
    co-sponsors only where the owner alone does not meet the minimum (``still_needed > 0``, tested first;
    PostgreSQL and SQLite evaluate AND left to right): with the default minimum of 1 and an active owner,
    no client of the tier runs the subquery, so the rule costs one scan, not one index probe per client."""
    if minimum <= 0:
        return Q(pk__in=[])
    still_needed = ExpressionWrapper(Value(minimum) - owner_sponsors(), output_field=IntegerField())
    return Q(risk_tier=tier) & Q(GreaterThan(still_needed, 0)) & Q(LessThan(active_co_sponsor_count(), still_needed))


def in_scope(rule: Rule) -> QuerySet:
    """The clients ``rule`` applies to, annotated with ``rule_base`` (the date its clock runs from)."""
    qs = Client.objects.filter(state=ClientState.ACTIVE, managed=True)
    scope = rule.scope
    if scope.tiers:
        qs = qs.filter(risk_tier__in=scope.tiers)
    if scope.teams:
        qs = qs.filter(team__slug__in=scope.teams)
    if scope.idps:
        qs = qs.filter(idp__name__in=scope.idps)
    if scope.created_via:
        qs = qs.filter(created_via__in=scope.created_via)
    return qs.annotate(rule_base=Coalesce(*BASE[rule.name]))


def flagged(rule: Rule, now: dt.datetime) -> QuerySet:
    """The clients ``rule`` flags at ``now``."""
    overdue = Q()
    for tier in sorted(set(rule.days_by_tier)):
        if rule.name == SPONSORS:
            overdue |= short_of_sponsors(tier, rule.days_for(tier))
        else:
            overdue |= Q(risk_tier=tier, rule_base__lt=now - dt.timedelta(days=rule.days_for(tier)))
    return in_scope(rule).filter(overdue)


def issue_since(rule: Rule, tier: str, base: dt.datetime) -> dt.datetime:
    return base + dt.timedelta(days=rule.days_for(tier))


def action_due(rule: Rule, since: dt.datetime, flagged_at: dt.datetime) -> dt.datetime:
    return max(since, flagged_at) + dt.timedelta(days=rule.grace_days)


# --- what-if -----------------------------------------------------------------------------------------------


@dataclass
class RulePreview:
    rule: str
    enabled: bool
    action: str
    grace_days: int
    scope: str
    flagged: int = 0
    acted_on: int = 0  # flagged and past their grace at `acts_from` (nobody attests or uses them meanwhile)
    acts_from: dt.datetime | None = None
    by_owner: Counter = field(default_factory=Counter)
    by_team: Counter = field(default_factory=Counter)

    @property
    def owners(self) -> list[tuple[str, int]]:
        return sorted(self.by_owner.items(), key=lambda item: (-item[1], item[0]))

    @property
    def teams(self) -> list[tuple[str, int]]:
        return sorted(self.by_team.items(), key=lambda item: (-item[1], item[0]))


@dataclass
class Preview:
    version_label: str
    monitor_only: bool
    now: dt.datetime
    rules: list[RulePreview]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["rule", "group", "name", "flagged_now", "acted_on_after_grace", "action", "acts_from"])
        for r in self.rules:
            acts_from = r.acts_from.isoformat() if r.acts_from else ""
            action = "none (monitor only)" if self.monitor_only else r.action
            writer.writerow([r.rule, "all", "", r.flagged, r.acted_on, action, acts_from])
            for group, counter in (("owner", r.by_owner), ("team", r.by_team)):
                for name, count in sorted(counter.items(), key=lambda item: (-item[1], item[0])):
                    writer.writerow([r.rule, group, name, count, 0 if self.monitor_only else count, action, acts_from])
        return out.getvalue()


def preview(rules: LifecycleRules, *, now: dt.datetime | None = None) -> Preview:
    """What ``rules`` would do on live data: per rule, the clients flagged now, and how many of them its action
    reaches once the grace has passed (``acts_from``: now + grace; open issues keep their earlier flag date, so
    some may be reached sooner, never later), by owner and team. Counts only: one query per enabled rule,
    grouped by (owner, team) — as many rows as there are owner-team pairs, whatever the number of clients —
    and summed both ways here, so the clients are scanned once per rule, not once per grouping."""
    now = now or timezone.now()
    results = []
    for rule in rules.rules():
        item = RulePreview(
            rule=rule.name,
            enabled=rule.enabled,
            action=rule.action,
            grace_days=rule.grace_days,
            scope=rule.scope.describe(),
        )
        if rule.enabled:
            pairs = flagged(rule, now).values_list("owner__username", "team__slug").annotate(n=_count()).order_by()
            for owner, team, count in pairs:
                item.by_owner[owner or "(no owner)"] += count
                item.by_team[team or "(no team)"] += count
            item.flagged = sum(item.by_owner.values())
            item.acted_on = 0 if rules.monitor_only else item.flagged
            item.acts_from = now + dt.timedelta(days=rule.grace_days)
        results.append(item)
    label = f"v{rules.version}" if rules.version else "proposed"
    return Preview(version_label=label, monitor_only=rules.monitor_only, now=now, rules=results)


def _count():
    return Count("id")


# --- the flagging pass -------------------------------------------------------------------------------------


@dataclass
class FlagResult:
    flagged: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)


def _resolve(qs: QuerySet, now: dt.datetime, why: str) -> int:
    return qs.filter(resolved_at__isnull=True).update(resolved_at=now, resolution=why)


FLAG_PASS_LOCK = 0x5245_4731_4C43_50  # "REG1LCP"


def _one_pass_at_a_time() -> None:
    """Two flagging passes at once (two beat instances, a retry) would both open the same issues and audit them
    twice: the second waits for the first to commit, then finds its issues. PostgreSQL: an advisory lock for the
    transaction; SQLite runs write transactions IMMEDIATE, which serialises them already."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FLAG_PASS_LOCK])


def _mark_stale(rule: Rule, now: dt.datetime) -> None:
    """``Client.stale_at`` ("stale" on the dashboard, in filters, the API and renewal review) is the inactivity
    rule's flag: set when the rule first flags a client, cleared when it no longer does (use reported, out of
    scope). The age-based stale sweep it replaces is gone: one rule says what "unused" means."""
    flagged_now = flagged(rule, now).values("pk")
    Client.objects.filter(pk__in=flagged_now, stale_at__isnull=True).update(stale_at=now)
    Client.objects.filter(state__in=LIVE_STATES, stale_at__isnull=False).exclude(pk__in=flagged_now).update(
        stale_at=None
    )


@transaction.atomic
def flag_issues(rules: LifecycleRules, *, now: dt.datetime | None = None) -> FlagResult:
    """Bring compliance issues in line with ``rules`` at ``now``: open one per newly flagged client (one
    ``client.compliance_flag`` audit event each), resolve those no longer flagged (not yet acted on), and move
    the action and its due date of open issues to the active rules."""
    now = now or timezone.now()
    _one_pass_at_a_time()
    result = FlagResult()
    open_issues = ComplianceIssue.objects.filter(resolved_at__isnull=True)
    # Ended or no longer live clients carry no open issue, acted on or not.
    _resolve(open_issues.exclude(client__state__in=LIVE_STATES), now, "client ended")
    events = []
    for rule in rules.rules():
        mine = open_issues.filter(rule=rule.name)
        if not rule.enabled:
            result.resolved[rule.name] = _resolve(mine.filter(acted_at__isnull=True), now, "rule disabled")
            result.flagged[rule.name] = 0
            if rule.name == INACTIVITY:
                Client.objects.filter(state__in=LIVE_STATES, stale_at__isnull=False).update(stale_at=None)
            continue
        rows = list(flagged(rule, now).values_list("pk", "registration_id", "risk_tier", "rule_base", "policy_version"))
        flagged_ids = {row[0] for row in rows}
        result.resolved[rule.name] = _resolve(
            mine.filter(acted_at__isnull=True).exclude(client_id__in=flagged_ids), now, "compliant"
        )
        have = set(mine.values_list("client_id", flat=True))
        new = []
        for pk, registration_id, tier, base, policy_version in rows:
            if pk in have:
                continue
            since = now if rule.name == SPONSORS else issue_since(rule, tier, base)
            due = action_due(rule, since, now)
            new.append(
                ComplianceIssue(
                    client_id=pk,
                    rule=rule.name,
                    since=since,
                    action=rule.action,
                    action_due_at=due,
                    flagged_at=now,
                    policy_version=rules.version,
                )
            )
            events.append(
                {
                    "actor": Actor.system("lifecycle_policies"),
                    "action": "client.compliance_flag",
                    "object_type": "client",
                    "object_id": registration_id,
                    "after": {
                        "rule": rule.name,
                        "since": since.isoformat(),
                        "action": rule.action,
                        "action_due_at": due.isoformat(),
                        "lifecycle_policy": rules.version,
                        "monitor_only": rules.monitor_only,
                    },
                    "policy_version": policy_version,
                }
            )
        ComplianceIssue.objects.bulk_create(new, ignore_conflicts=True, batch_size=2000)
        result.flagged[rule.name] = len(new)
        if rule.name == INACTIVITY:
            _mark_stale(rule, now)
        # Open issues not yet acted on follow the active rules: action and grace as they are now.
        mine.filter(acted_at__isnull=True).update(
            action=rule.action,
            policy_version=rules.version,
            action_due_at=Greatest(F("since"), F("flagged_at")) + dt.timedelta(days=rule.grace_days),
        )
    audit_record_many(events)
    return result


def rule_applies(rule: Rule, client: Client) -> bool:
    """In Python, for one client already loaded (with its team and IdP): what :func:`in_scope` selects."""
    scope = rule.scope
    return (
        rule.enabled
        and client.state == ClientState.ACTIVE
        and client.managed
        and (not scope.tiers or client.risk_tier in scope.tiers)
        and (not scope.teams or (client.team is not None and client.team.slug in scope.teams))
        and (not scope.idps or client.idp.name in scope.idps)
        and (not scope.created_via or client.created_via in scope.created_via)
    )


def attestation_due(rules: LifecycleRules, client: Client) -> dt.datetime | None:
    """When ``client``'s next attestation is due under ``rules`` (None: the rule does not apply to it)."""
    rule = rules.attestation
    if not rule_applies(rule, client):
        return None
    base = client.attested_at or client.activated_at or client.created_at
    return issue_since(rule, client.risk_tier, base)


def open_issues_for(client: Client) -> list[ComplianceIssue]:
    return list(client.compliance_issues.filter(resolved_at__isnull=True).order_by("rule"))


def compliance_of(client: Client, rules: LifecycleRules | None = None) -> list[dict]:
    """The client's open compliance issues, for the explain page and the API: which rule, since when, what
    happens when (or what happened)."""
    if rules is None:
        from inventory.lifecycle_policies.store import active_lifecycle_rules

        rules = active_lifecycle_rules()
    out = []
    for issue in open_issues_for(client):
        if issue.acted_at is not None:
            happens = f"{issue.action}: done {issue.acted_at:%Y-%m-%d %H:%M} UTC ({issue.resolution})"
        elif rules.monitor_only:
            happens = f"{issue.action} from {issue.action_due_at:%Y-%m-%d %H:%M} UTC once enforced (monitor only)"
        else:
            happens = f"{issue.action} at {issue.action_due_at:%Y-%m-%d %H:%M} UTC unless fixed"
        out.append(
            {
                "rule": issue.rule,
                "since": issue.since,
                "flagged_at": issue.flagged_at,
                "action": issue.action,
                "action_due_at": issue.action_due_at,
                "acted_at": issue.acted_at,
                "monitor_only": rules.monitor_only,
                "lifecycle_policy_version": issue.policy_version,
                "what_happens": happens,
            }
        )
    return out


__all__ = [
    "INACTIVITY",
    "attestation_due",
    "compliance_of",
    "rule_applies",
    "FlagResult",
    "Preview",
    "RulePreview",
    "flag_issues",
    "flagged",
    "in_scope",
    "open_issues_for",
    "preview",
]
