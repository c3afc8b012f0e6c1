"""The attestation campaign: progress per team and per owner under the active lifecycle policy.

For the clients the attestation rule applies to (active, managed, in scope): **attested** (not due within
``DUE_SOON_DAYS``), **due** (due within it), **overdue** (past due); plus **acted on**: clients whose attestation
issue has had its action (suspended under a policy hold, retired, or the owner notified) and is still open.
Two grouped queries over the clients, two over the issues. The framework items it evidences are listed with it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field

from django.db.models import Count, Q
from django.utils import timezone

from inventory.lifecycle_policies import active_lifecycle_rules
from inventory.lifecycle_policies.evaluate import in_scope
from inventory.lifecycle_policies.rules import ATTESTATION, LifecycleRules
from inventory.models import ComplianceIssue

DUE_SOON_DAYS = 14


#: Periodic review and recertification (NIST AI RMF), offboarding and overprivilege (OWASP NHI): the items the
#: framework report's own "Owners re-attest" control (inventory.reports.controls) maps to, named exactly as in
#: inventory/reports/frameworks.yaml (copied from ../shared/frameworks.yaml).
def _evidences() -> tuple[tuple[str, str], ...]:
    from inventory.reports.controls import CONTROLS_BY_KEY, framework_catalogue

    names = {item["id"]: item["name"] for fw in framework_catalogue().values() for item in fw["items"]}
    return tuple((item, names[item]) for item in CONTROLS_BY_KEY["attestation_current"].items)


COLUMNS = ("attested", "due", "overdue", "acted_on")


@dataclass
class CampaignRow:
    name: str
    attested: int = 0
    due: int = 0
    overdue: int = 0
    acted_on: int = 0

    @property
    def total(self) -> int:
        return self.attested + self.due + self.overdue + self.acted_on

    @property
    def percent_attested(self) -> int:
        return round(100 * self.attested / self.total) if self.total else 100


@dataclass
class Campaign:
    rules: LifecycleRules
    now: dt.datetime
    by_team: list[CampaignRow] = field(default_factory=list)
    by_owner: list[CampaignRow] = field(default_factory=list)
    totals: CampaignRow = field(default_factory=lambda: CampaignRow("all"))
    evidences: tuple = field(default_factory=_evidences)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group", "name", *COLUMNS, "total", "percent_attested"])
        for group, rows in (("all", [self.totals]), ("team", self.by_team), ("owner", self.by_owner)):
            for row in rows:
                writer.writerow([group, row.name, *(getattr(row, c) for c in COLUMNS), row.total, row.percent_attested])
        return out.getvalue()


def _status_counts(rules: LifecycleRules, now: dt.datetime):
    rule = rules.attestation
    overdue, due = Q(), Q()
    for tier in sorted(set(rule.days_by_tier)):
        days = dt.timedelta(days=rule.days_for(tier))
        overdue |= Q(risk_tier=tier, rule_base__lt=now - days)
        due |= Q(risk_tier=tier, rule_base__lt=now - days + dt.timedelta(days=DUE_SOON_DAYS))
    return {
        "overdue": Count("id", filter=overdue),
        "due": Count("id", filter=due & ~overdue),
        "attested": Count("id", filter=~due),
    }


def attestation_campaign(*, now: dt.datetime | None = None) -> Campaign:
    now = now or timezone.now()
    rules = active_lifecycle_rules()
    campaign = Campaign(rules=rules, now=now)
    if not rules.attestation.enabled:
        return campaign
    scoped = in_scope(rules.attestation)
    counts = _status_counts(rules, now)
    acted = ComplianceIssue.objects.filter(rule=ATTESTATION, resolved_at__isnull=True, acted_at__isnull=False)
    for key, label, missing in (
        ("team__slug", "by_team", "(no team)"),
        ("owner__username", "by_owner", "(no owner)"),
    ):
        rows: dict[str, CampaignRow] = {}
        for values in scoped.values(key).annotate(**counts).order_by():
            name = values[key] or missing
            rows[name] = CampaignRow(name, values["attested"], values["due"], values["overdue"])
        for name, n in acted.values_list(f"client__{key}").annotate(n=Count("id")).order_by():
            rows.setdefault(name or missing, CampaignRow(name or missing)).acted_on += n
        setattr(campaign, label, sorted(rows.values(), key=lambda r: (-(r.overdue + r.acted_on), r.name)))
    for row in campaign.by_team:
        for column in COLUMNS:
            setattr(campaign.totals, column, getattr(campaign.totals, column) + getattr(row, column))
    return campaign
