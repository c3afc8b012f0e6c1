"""Registrar's controls, measured on live data, and their mapping onto framework items.

Each client-level control is a *population* (which clients it applies to) and a *failing* condition
(both ``Q`` objects): they select the clients behind the drill-down link (``/inventory/?failing=<control>``)
through the shared FilterSet. The report does not evaluate them on the clients: it counts them from the rollups
the lifecycle gate keeps (``inventory.counts``) and, where a figure depends on the time of the report (a TTL
ceiling, the orphan grace, the attestation period), counts only the one hour or day the cut falls in from an
index — so its cost does not grow with the clients (docs/scale.md, "Controls at 10M"). The audit control is
measured by :func:`audit_chain_status` (incremental, cached).

A control passes when nothing fails, is *partial* when at least ``PARTIAL_AT`` of its population passes,
and fails below that. A framework item takes the worst status of the controls mapped onto it; items no
Registrar control addresses are reported as "not assessed" rather than silently passed.

Over 400 lines on purpose: the controls' definitions, their conditions and their counted measurement must agree
control by control (the tests compare the counts with the conditions), and read best side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from inventory.ceilings import DEFAULT_TTL_CEILINGS
from inventory.choices import LIVE_STATES, ClientState, RiskTier
from inventory.counts import ATTEST_BASIS, ORPHAN_COUNTED_STATES, week_of
from inventory.keys import KEY_BASED_METHODS, SHARED_SECRET_METHODS
from inventory.models import Client
from inventory.reports.audit_log import audit_chain_status
from inventory.selectors import counts

CATALOGUE_PATH = Path(__file__).with_name("frameworks.yaml")
PARTIAL_AT = 0.9
PASS, PARTIAL, FAIL, NOT_ASSESSED = "pass", "partial", "fail", "not_assessed"
STATUS_RANK = {PASS: 0, PARTIAL: 1, FAIL: 2}
SHARED_SECRET_AUTH_METHODS = SHARED_SECRET_METHODS  # one definition: inventory.keys


@dataclass(frozen=True)
class Control:
    key: str
    name: str
    population_label: str
    passing_phrase: str
    items: tuple[str, ...]
    description: str = ""


CONTROLS: tuple[Control, ...] = (
    Control(
        "owner_bound",
        "Owner bound",
        "live clients",
        "have an active owner",
        ("NHI1:2025", "NHI9:2025", "ASI03", "ASI10", "T13", "GOVERN 1.6", "GOVERN 2.1", "L6", "L7"),
        "Every live client names a person who is still active in the directory.",
    ),
    Control(
        "purpose_recorded",
        "Purpose recorded",
        "live clients",
        "have a recorded purpose",
        ("MAP 1.1", "MAP 3.3", "GOVERN 1.6", "NHI9:2025", "ASI10", "L7"),
        "Every live client says what it is for.",
    ),
    Control(
        "ttl_within_ceiling",
        "TTL within ceiling",
        "live clients",
        "expire within their tier's TTL ceiling",
        ("NHI7:2025", "NHI2:2025", "ASI03", "AML.T0091.000", "AML.T0055", "MANAGE 2.4", "L6"),
        "Every live client has an expiry no further away than its risk tier allows (low 24 h, medium 7 d, high 24 h).",
    ),
    Control(
        "key_based_auth",
        "Key-based authentication",
        "live clients",
        "authenticate with a key",
        ("NHI4:2025", "NHI2:2025", "ASI03", "ASI07", "T9", "AML.T0083", "AML.T0098", "AML.T0055", "L4"),
        "Clients authenticate with private_key_jwt or mutual TLS, not with a bearer secret.",
    ),
    Control(
        "no_shared_secret",
        "No shared secret",
        "live clients",
        "hold no shared client secret",
        ("NHI2:2025", "NHI4:2025", "NHI7:2025", "AML.T0012", "AML.T0055", "AML.T0083", "AML.T0098"),
        "No live client uses client_secret_basic / client_secret_post / client_secret_jwt.",
    ),
    Control(
        "human_approval_high_tier",
        "Human approval for high tier",
        "live high-tier clients",
        "were approved by two distinct people",
        ("GOVERN 3.2", "GOVERN 1.4", "MAP 3.5", "ASI03", "ASI09", "T10", "AML.M0029", "L6"),
        "Every live high-risk client's registration carries two distinct human approvals.",
    ),
    Control(
        "scope_within_catalogue",
        "Scopes within catalogue",
        "live clients",
        "hold only catalogued scopes",
        ("NHI5:2025", "NHI3:2025", "ASI02", "ASI03", "T3", "MAP 3.3", "AML.M0026", "AML.M0028"),
        "Every scope a live client holds is an active entry of the scope catalogue.",
    ),
    Control(
        "child_within_parent",
        "Child within parent",
        "live spawned clients",
        "stay within their parent's scopes and lifetime",
        ("NHI5:2025", "ASI03", "ASI08", "ASI10", "T3", "T13", "AML.M0027", "AML.T0103", "L7"),
        "A spawned client holds at most its parent's scopes and outlives it never.",
    ),
    Control(
        "orphan_within_grace",
        "Orphans handled within grace",
        "live orphaned clients",
        "were suspended, retired or taken over within the grace period",
        ("NHI1:2025", "GOVERN 1.7", "MANAGE 2.4", "MANAGE 4.1", "AML.T0012", "AML.T0021"),
        "A client whose owner left is not still active after the orphan grace period.",
    ),
    Control(
        "attestation_current",
        "Owners re-attest",
        "active clients the attestation rule covers",
        "were re-attested by their owner within their tier's period",
        ("GOVERN 1.4", "GOVERN 1.6", "GOVERN 1.7", "MANAGE 2.4", "MANAGE 4.1", "NHI1:2025", "NHI5:2025"),
        "Periodic review: each active client's owner confirmed it is still needed and its scopes still right "
        "within its tier's attestation period (lifecycle policy, /inventory/mine/attest/), whether the rule is "
        "enforced or monitor only.",
    ),
    Control(
        "audit_chain_intact",
        "Audit log intact",
        "audit events",
        "verify against the signed checkpoint",
        ("T8", "GOVERN 4.3", "MEASURE 2.7", "MEASURE 2.8", "AML.M0024", "L5", "L6"),
        "The audit log's Merkle tree, recomputed from the events, matches its latest signed checkpoint, "
        "and the database refuses to change or delete events.",
    ),
    Control(
        "idp_in_sync",
        "IdP in sync",
        "live clients",
        "match their IdP (no failed sync, drift or shadow)",
        ("NHI1:2025", "GOVERN 1.6", "MEASURE 2.4", "MANAGE 4.1", "ASI10", "AML.T0081", "L4", "L5"),
        "Inventory and IdP agree: no dead-lettered pushes, no drift, no unmanaged (shadow) clients.",
    ),
)
CONTROLS_BY_KEY = {c.key: c for c in CONTROLS}
CLIENT_CONTROL_KEYS = tuple(c.key for c in CONTROLS if c.key != "audit_chain_intact")


# --- the catalogue -----------------------------------------------------------------------------


@cache
def framework_catalogue() -> dict[str, dict[str, Any]]:
    """{framework key: {"title", "items": [{"id", "name"}]}} exactly as in frameworks.yaml."""
    with CATALOGUE_PATH.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def catalogue_item_ids() -> set[str]:
    return {item["id"] for fw in framework_catalogue().values() for item in fw["items"]}


# --- client controls as Q ----------------------------------------------------------------------


def _leavers():
    """The ids of the people who left, as a subquery (read from the partial index ``user_inactive_idx``)."""
    return get_user_model().objects.filter(is_active=False).values("pk")


def control_conditions(
    key: str,
    *,
    now: datetime | None = None,
    within_live: bool = False,
) -> tuple[Q, Q]:
    """(population, failing) for a client-level control; ``failing`` is evaluated within the population.

    ``within_live``: the caller already restricts to live clients, so the population needn't repeat it."""
    now = now or timezone.now()
    live = Q() if within_live else Q(state__in=LIVE_STATES)
    if key == "owner_bound":
        return live, Q(owner__isnull=True) | Q(owner_id__in=_leavers())
    if key == "purpose_recorded":
        return live, Q(purpose="")
    if key == "ttl_within_ceiling":
        over = Q(expires_at__isnull=True)
        for tier in RiskTier:
            over |= Q(risk_tier=tier.value, expires_at__gt=now + timedelta(seconds=DEFAULT_TTL_CEILINGS[tier]))
        return live, over
    if key == "key_based_auth":
        return live, ~Q(auth_method__in=KEY_BASED_METHODS)
    if key == "no_shared_secret":
        return live, Q(auth_method__in=SHARED_SECRET_AUTH_METHODS)
    # The next three read columns the database keeps (inventory.flag_triggers, approvals.approval_flags): the
    # catalogue, the parent and the approvals are evaluated when they or the client change, not per report.
    # (The report counts them: _counted_controls. These conditions select the clients, for drill-downs.)
    if key == "human_approval_high_tier":
        return live & Q(risk_tier=RiskTier.HIGH, managed=True), ~Q(two_person_approved=True)
    if key == "scope_within_catalogue":
        return live, Q(uncatalogued_scopes=True)
    if key == "child_within_parent":
        return live & Q(parent__isnull=False), Q(outside_parent=True)
    if key == "orphan_within_grace":
        grace = timedelta(hours=settings.REGISTRAR_ORPHAN_GRACE_HOURS)
        return live & Q(orphaned_at__isnull=False), Q(
            state__in=sorted(ORPHAN_COUNTED_STATES), orphaned_at__lt=now - grace
        )
    if key == "idp_in_sync":
        return live, Q(sync_failed=True) | Q(drift__isnull=False) | Q(managed=False)
    if key == "attestation_current":
        return _attestation_conditions(live, now)
    raise KeyError(key)


def _attestation_conditions(live: Q, now: datetime) -> tuple[Q, Q]:
    """The active lifecycle policy's attestation rule as Q: its scope, and "not attested for its tier's days"
    (from the last attestation, else activation, else creation — what the rule's flagging pass counts)."""
    from inventory.lifecycle_policies.store import active_lifecycle_rules

    rule = active_lifecycle_rules().attestation
    scope = rule.scope
    population = live & Q(state=ClientState.ACTIVE, managed=True)
    for lookup, values in (
        ("risk_tier__in", scope.tiers),
        ("team__slug__in", scope.teams),
        ("idp__name__in", scope.idps),
        ("created_via__in", scope.created_via),
    ):
        if values:
            population &= Q(**{lookup: list(values)})
    overdue = Q(pk__in=[])
    for tier in sorted(rule.days_by_tier):
        cut = now - timedelta(days=rule.days_for(tier))
        overdue |= Q(risk_tier=tier) & (
            Q(attested_at__lt=cut)
            | Q(attested_at__isnull=True, activated_at__lt=cut)
            | Q(attested_at__isnull=True, activated_at__isnull=True, created_at__lt=cut)
        )
    return population, overdue


def failing_clients(key: str, qs=None):
    """Clients failing control ``key`` (drill-down); unknown keys raise KeyError."""
    population, failing = control_conditions(key)
    return (qs if qs is not None else Client.objects.all()).filter(population).filter(failing)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class ControlResult:
    control: Control
    status: str
    total: int
    failing: int
    sentence: str
    drill_down: str | None = None  # query string for the inventory, e.g. "failing=owner_bound"
    note: str = ""

    @property
    def passing(self) -> int:
        return self.total - self.failing

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.passing / self.total, 1) if self.total else None


def _status(total: int, failing: int) -> str:
    if failing == 0:
        return PASS
    return PARTIAL if (total - failing) / total >= PARTIAL_AT else FAIL


def _sentence(control: Control, total: int, failing: int) -> str:
    if total == 0:
        return f"No {control.population_label} to measure — nothing fails."
    pct = 100.0 * (total - failing) / total
    pct_text = f"{pct:.1f}".rstrip("0").rstrip(".") if pct not in (0, 100) else f"{pct:.0f}"
    tail = "all do" if failing == 0 else (f"{failing:,} does not" if failing == 1 else f"{failing:,} do not")
    return f"{pct_text} % of {control.population_label} {control.passing_phrase} — {tail}."


_CONTROL_CUBE = (
    "risk_tier",
    "auth_method",
    "managed",
    "sync_failed",
    "drifted",
    "no_purpose",
    "no_expiry",
    "orphaned",
    "depth",
    "two_person",
)


def _counted_controls(now: datetime, team_id: int | None) -> dict[str, tuple[int, int]]:
    """(population, failing) of every client control, none of them by reading every client: the counts (the cube,
    the owners, the expiry and orphaning hours, the attestation days or weeks) with the one hour or day a time cut
    falls in counted on an index, and for what the clients themselves get wrong (a scope outside the catalogue, a
    child outside its parent) the failing clients from a partial index that holds only them."""
    cube = counts.cube(_CONTROL_CUBE, team_id=team_id)
    live = sum(row[-1] for row in cube)

    def where(test) -> int:
        return sum(n for *key, n in cube if test(dict(zip(_CONTROL_CUBE, key, strict=True))))

    over_ceiling = where(lambda k: k["no_expiry"])
    hours = counts.expiring(since=now, team_id=team_id)
    scoped = Client.objects.filter(state__in=LIVE_STATES, **({"team_id": team_id} if team_id is not None else {}))
    for tier in RiskTier:
        limit = now + timedelta(seconds=DEFAULT_TTL_CEILINGS[tier])
        bucket = counts.hour_of(limit)
        # whole hours past the ceiling from the counts; the hour the ceiling falls in, exactly: one index-only range
        # per tier (client_state_expiry_idx includes the tier; an OR of the three would read the rows)
        over_ceiling += sum(n for t, hour, n in hours if t == tier.value and hour > bucket)
        over_ceiling += scoped.filter(
            risk_tier=tier.value, expires_at__gt=limit, expires_at__lt=bucket + timedelta(hours=1)
        ).count()

    def failing(key: str) -> int:  # the control's failing clients, from the partial index that holds only them
        population, fails = control_conditions(key, now=now, within_live=True)
        return scoped.filter(population & fails).count()

    def high_managed(k) -> bool:
        return k["risk_tier"] == RiskTier.HIGH and k["managed"]

    return {
        # no owner, or one who left: the leavers as a subquery (user_inactive_idx), not a list of their ids sent
        # back (at 50,000 people, 1,000 leavers made the statement and its parameters the report's largest cost)
        "owner_bound": (
            live,
            counts.owners_total([0], team_id=team_id) + counts.owners_total(_leavers(), team_id=team_id),
        ),
        "purpose_recorded": (live, where(lambda k: k["no_purpose"])),
        "ttl_within_ceiling": (live, over_ceiling),
        "key_based_auth": (live, where(lambda k: k["auth_method"] not in KEY_BASED_METHODS)),
        "no_shared_secret": (live, where(lambda k: k["auth_method"] in SHARED_SECRET_AUTH_METHODS)),
        "idp_in_sync": (live, where(lambda k: k["sync_failed"] or k["drifted"] or not k["managed"])),
        "human_approval_high_tier": (
            where(high_managed),
            where(lambda k: high_managed(k) and not k["two_person"]),
        ),
        "scope_within_catalogue": (live, failing("scope_within_catalogue")),
        # a spawned client is one with a parent: depth > 0 (inventory.services sets it from the parent's)
        "child_within_parent": (where(lambda k: k["depth"] > 0), failing("child_within_parent")),
        "orphan_within_grace": (where(lambda k: k["orphaned"]), _orphans_past_grace(now, team_id, scoped)),
        "attestation_current": _attestation_counts(now, team_id),
    }


def _orphans_past_grace(now: datetime, team_id: int | None, scoped) -> int:
    """Active and provisioning orphans orphaned before the grace period: the whole hours before the hour grace
    ends in from the counts (``counts.orphaned_hours``), that hour exactly (a range of ``client_orphan_active_idx``,
    orphaning time first)."""
    cut = now - timedelta(hours=settings.REGISTRAR_ORPHAN_GRACE_HOURS)
    bucket = counts.hour_of(cut)
    whole = sum(n for hour, n in counts.orphaned_hours(before=bucket, team_id=team_id))
    edge = scoped.filter(state__in=sorted(ORPHAN_COUNTED_STATES), orphaned_at__gte=bucket, orphaned_at__lt=cut).count()
    return whole + edge


def _attestation_counts(now: datetime, team_id: int | None) -> tuple[int, int]:
    """(covered, overdue) of the attestation rule from the counts — everyone's by day
    (``counts.attestation_days``), a team's by week (``counts.attestation_weeks``): whole days (weeks) before the
    one each tier's cut falls in from the counts, that one exactly (a range of the ``client_attest_basis_idx``
    index). The same clients as ``_attestation_conditions`` selects. A rule scoped
    by IdP or registration path (the counts keep neither) is counted on the clients."""
    from inventory.lifecycle_policies.store import active_lifecycle_rules
    from inventory.models import Team

    rule = active_lifecycle_rules().attestation
    scope = rule.scope
    population, overdue_q = _attestation_conditions(Q(), now)
    clients = Client.objects.filter(population, **({"team_id": team_id} if team_id is not None else {}))
    if scope.idps or scope.created_via:
        return clients.count(), clients.filter(overdue_q).count()
    team_ids = list(Team.objects.filter(slug__in=scope.teams).values_list("pk", flat=True)) if scope.teams else None
    if team_ids is not None and team_id is not None:
        team_ids = [t for t in team_ids if t == team_id]
    if team_id is None and team_ids is None:  # everyone's: by day (ClientAttestDayCount)
        buckets, bucket_of = counts.attestation_days(), _day_of
    else:  # a team's, or the teams a rule is scoped to: by week
        buckets = counts.attestation_weeks(team_id=team_id if team_ids is None else None, team_ids=team_ids)
        bucket_of = week_of
    cuts = {tier: now - timedelta(days=rule.days_for(tier)) for tier in rule.days_by_tier}
    total = overdue = 0
    for tier, start, n in buckets:
        if scope.tiers and tier not in scope.tiers:
            continue
        total += n
        if tier in cuts and start < bucket_of(cuts[tier]):
            overdue += n
    for tier, cut in cuts.items():  # one index-only range per tier (an OR of them would read the rows)
        if scope.tiers and tier not in scope.tiers:
            continue
        start = datetime.combine(bucket_of(cut), datetime.min.time(), tzinfo=UTC)
        overdue += clients.alias(basis=ATTEST_BASIS).filter(risk_tier=tier, basis__gte=start, basis__lt=cut).count()
    return total, overdue


def _day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def measure_controls(*, now: datetime | None = None, team=None) -> list[ControlResult]:
    """Every control on live data (of one team, or all), from the counts and the failing clients' indexes, plus
    the audit check. A team's drill-down links keep to the team."""
    now = now or timezone.now()
    team_id, team_slug = (team.pk, team.slug) if team is not None else (None, "")
    figures = _counted_controls(now, team_id)
    results = []
    for control in CONTROLS:
        if control.key == "audit_chain_intact":
            results.append(_audit_result(control))
            continue
        total, failing = figures[control.key]
        results.append(
            ControlResult(
                control=control,
                status=_status(total, failing),
                total=total,
                failing=failing,
                sentence=_sentence(control, total, failing),
                drill_down=(f"failing={control.key}" + (f"&team={team_slug}" if team_slug else ""))
                if failing
                else None,
            )
        )
    return results


# --- audit log (verified incrementally: inventory.reports.audit_log) ------------------------------


def _audit_result(control: Control) -> ControlResult:
    status = audit_chain_status()
    head_id = status["head_id"]
    if status["missing_triggers"]:
        return ControlResult(
            control,
            FAIL,
            head_id,
            head_id,
            "The database does not refuse changes to the audit log: triggers missing ("
            f"{', '.join(status['missing_triggers'])}).",
        )
    if status["broken"]:
        return ControlResult(control, FAIL, head_id, 1, f"The audit log is broken: {status['broken']['problem']}.")
    if not status["complete"]:
        return ControlResult(
            control,
            PARTIAL,
            head_id,
            0,
            f"{status['checked']:,} of {head_id:,} audit events verified so far — no break found; "
            "the rest is verified on the next report runs (or run manage.py verify_audit).",
            note="verification in progress",
        )
    return ControlResult(
        control,
        PASS,
        head_id,
        0,
        f"100 % of {head_id:,} sealed audit events verify against signed checkpoint {head_id:,} "
        "— none altered; the database refuses changes.",
    )


# --- framework coverage --------------------------------------------------------------------------


@dataclass
class ItemCoverage:
    id: str
    name: str
    status: str
    controls: list[ControlResult] = field(default_factory=list)

    @property
    def evidence_total(self) -> int:
        return sum(r.total for r in self.controls)

    @property
    def evidence_failing(self) -> int:
        return sum(r.failing for r in self.controls)


def framework_coverage(results: list[ControlResult]) -> list[dict[str, Any]]:
    """Per framework: each item with its status (worst mapped control) and the controls behind it."""
    by_item: dict[str, list[ControlResult]] = {}
    for result in results:
        for item_id in result.control.items:
            by_item.setdefault(item_id, []).append(result)
    frameworks = []
    for key, fw in framework_catalogue().items():
        items = []
        for item in fw["items"]:
            mapped = by_item.get(item["id"], [])
            status = max((r.status for r in mapped), key=STATUS_RANK.__getitem__) if mapped else NOT_ASSESSED
            items.append(ItemCoverage(id=item["id"], name=item["name"], status=status, controls=mapped))
        summary = {s: sum(1 for i in items if i.status == s) for s in (PASS, PARTIAL, FAIL, NOT_ASSESSED)}
        frameworks.append({"key": key, "title": fw["title"], "items": items, "summary": summary})
    return frameworks


def framework_report(*, now: datetime | None = None, team=None) -> dict[str, Any]:
    """The framework report, for every client or one ``team``'s."""
    now = now or timezone.now()
    results = measure_controls(now=now, team=team)
    return {"generated_at": now, "team": team, "controls": results, "frameworks": framework_coverage(results)}
