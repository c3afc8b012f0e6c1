"""The lifecycle rules a policy version holds, validated: attestation, inactivity, sponsors.

Stored as JSON on ``LifecyclePolicy.rules``::

    {"attestation": {"enabled": true, "days": {"high": 30, "medium": 90, "low": 180},
                     "grace_days": 7, "action": "notify", "scope": {"tiers": [], "teams": [], "idps": [],
                                                                    "created_via": []}},
     "inactivity":  {"enabled": true, "days": 90, "grace_days": 14, "action": "notify", "scope": {...}},
     "sponsors":    {"enabled": true, "minimum": {"high": 2, "medium": 1, "low": 1}, "grace_days": 14, ...}}

A scope's empty list means "all". Actions: ``notify`` (the owner is told), ``suspend`` (a policy hold only
security or an admin lifts), ``retire``. Grace is 0–30 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inventory.choices import CreatedVia, RiskTier

ATTESTATION = "attestation"
INACTIVITY = "inactivity"
SPONSORS = "sponsors"
RULES = (ATTESTATION, INACTIVITY, SPONSORS)
ACTIONS = ("notify", "suspend", "retire")
MAX_GRACE_DAYS = 30
DEFAULT_ATTESTATION_DAYS = {RiskTier.HIGH.value: 30, RiskTier.MEDIUM.value: 90, RiskTier.LOW.value: 180}
#: Active sponsors (the owner, if active, and accepted co-sponsors) a client needs, by tier.
DEFAULT_MINIMUM_SPONSORS = {RiskTier.HIGH.value: 2, RiskTier.MEDIUM.value: 1, RiskTier.LOW.value: 1}


class LifecyclePolicyError(ValueError):
    """What is wrong with a set of rules (every problem, one per line)."""


@dataclass(frozen=True)
class Scope:
    tiers: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()  # team slugs
    idps: tuple[str, ...] = ()  # IdP connection names
    created_via: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("tiers", "teams", "idps", "created_via")}

    def describe(self) -> str:
        parts = [f"{k}: {', '.join(v)}" for k, v in self.to_dict().items() if v]
        return "; ".join(parts) or "all clients"


@dataclass(frozen=True)
class Rule:
    name: str
    enabled: bool = True
    days_by_tier: Mapping[str, int] = field(default_factory=dict)
    grace_days: int = 7
    action: str = "notify"
    scope: Scope = Scope()

    def days_for(self, tier: str) -> int:
        return int(self.days_by_tier[tier])

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "grace_days": self.grace_days,
            "action": self.action,
            "scope": self.scope.to_dict(),
        }
        if self.name == INACTIVITY:
            out["days"] = self.days_for(RiskTier.LOW)
        elif self.name == SPONSORS:
            out["minimum"] = dict(self.days_by_tier)
        else:
            out["days"] = dict(self.days_by_tier)
        return out


@dataclass(frozen=True)
class LifecycleRules:
    version: int
    monitor_only: bool
    attestation: Rule
    inactivity: Rule
    sponsors: Rule

    def rules(self) -> list[Rule]:
        return [self.attestation, self.inactivity, self.sponsors]

    def to_dict(self) -> dict:
        return {rule.name: rule.to_dict() for rule in self.rules()}


DEFAULT_RULES: dict = {
    ATTESTATION: {"enabled": True, "days": dict(DEFAULT_ATTESTATION_DAYS), "grace_days": 7, "action": "notify"},
    INACTIVITY: {"enabled": True, "days": 90, "grace_days": 14, "action": "notify"},
    SPONSORS: {"enabled": True, "minimum": dict(DEFAULT_MINIMUM_SPONSORS), "grace_days": 14, "action": "notify"},
}


def _int(value, where: str, errors: list[str], *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(f"{where}: a whole number from {low} to {high}")
        return low
    return value


def _scope(raw, where: str, errors: list[str]) -> Scope:
    if raw is None:
        return Scope()
    if not isinstance(raw, Mapping):
        errors.append(f"{where}.scope: an object with tiers, teams, idps, created_via")
        return Scope()
    unknown = sorted(set(raw) - {"tiers", "teams", "idps", "created_via"})
    if unknown:
        errors.append(f"{where}.scope: unknown key {unknown[0]!r}")
    values: dict[str, tuple[str, ...]] = {}
    for key in ("tiers", "teams", "idps", "created_via"):
        items = raw.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            errors.append(f"{where}.scope.{key}: a list of names")
            items = []
        values[key] = tuple(items)
    bad_tiers = [t for t in values["tiers"] if t not in RiskTier.values]
    if bad_tiers:
        errors.append(f"{where}.scope.tiers: unknown tier {bad_tiers[0]!r}")
    bad_via = [v for v in values["created_via"] if v not in CreatedVia.values]
    if bad_via:
        errors.append(f"{where}.scope.created_via: unknown value {bad_via[0]!r}")
    return Scope(**values)


def _rule(name: str, raw, errors: list[str]) -> Rule:
    if not isinstance(raw, Mapping):
        errors.append(f"{name}: an object")
        raw = DEFAULT_RULES[name]
    count_key = "minimum" if name == SPONSORS else "days"
    unknown = sorted(set(raw) - {"enabled", count_key, "grace_days", "action", "scope"})
    if unknown:
        errors.append(f"{name}: unknown key {unknown[0]!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        errors.append(f"{name}.enabled: true or false")
    days = raw.get(count_key, DEFAULT_RULES[name][count_key])
    if name in (ATTESTATION, SPONSORS):
        low, high = (1, 3650) if name == ATTESTATION else (0, 10)
        if not isinstance(days, Mapping):
            errors.append(f"{name}.{count_key}: an object with one number per tier (high, medium, low)")
            days = DEFAULT_RULES[name][count_key]
        missing = [t for t in RiskTier.values if t not in days]
        extra = [t for t in days if t not in RiskTier.values]
        if missing or extra:
            errors.append(f"{name}.{count_key}: one entry for each of high, medium, low")
        by_tier = {t: _int(days.get(t), f"{name}.{count_key}.{t}", errors, low=low, high=high) for t in RiskTier.values}
    else:
        n = _int(days, f"{name}.days", errors, low=1, high=3650)
        by_tier = dict.fromkeys(RiskTier.values, n)
    grace = _int(raw.get("grace_days", 7), f"{name}.grace_days", errors, low=0, high=MAX_GRACE_DAYS)
    action = raw.get("action", "notify")
    if action not in ACTIONS:
        errors.append(f"{name}.action: one of {', '.join(ACTIONS)}")
        action = "notify"
    return Rule(
        name=name,
        enabled=bool(enabled),
        days_by_tier=by_tier,
        grace_days=grace,
        action=action,
        scope=_scope(raw.get("scope"), name, errors),
    )


def parse_rules(raw: Mapping[str, Any] | None, *, version: int = 0, monitor_only: bool = False) -> LifecycleRules:
    """Validated rules (missing rules take their defaults); :class:`LifecyclePolicyError` lists every problem."""
    raw = DEFAULT_RULES if raw is None else raw
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        raise LifecyclePolicyError("rules: an object with attestation and inactivity")
    unknown = sorted(set(raw) - set(RULES))
    if unknown:
        errors.append(f"unknown rule {unknown[0]!r} (known: {', '.join(RULES)})")
    attestation = _rule(ATTESTATION, raw.get(ATTESTATION, DEFAULT_RULES[ATTESTATION]), errors)
    inactivity = _rule(INACTIVITY, raw.get(INACTIVITY, DEFAULT_RULES[INACTIVITY]), errors)
    sponsors = _rule(SPONSORS, raw.get(SPONSORS, DEFAULT_RULES[SPONSORS]), errors)
    if errors:
        raise LifecyclePolicyError("\n".join(errors))
    return LifecycleRules(
        version=version,
        monitor_only=monitor_only,
        attestation=attestation,
        inactivity=inactivity,
        sponsors=sponsors,
    )
