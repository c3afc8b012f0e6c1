"""Lifecycle policies: versioned rules (attestation, inactivity), compliance issues, what-if, enforcement.

- :mod:`~inventory.lifecycle_policies.rules` — the rules a version holds, validated, and their defaults;
- :mod:`~inventory.lifecycle_policies.store` — the active version; publish and restore (audited);
- :mod:`~inventory.lifecycle_policies.evaluate` — which clients a rule flags, the what-if preview, the flagging
  pass that opens and resolves ``ComplianceIssue`` rows;
- :mod:`~inventory.lifecycle_policies.enforce` — past grace, the rule's action, once, through the lifecycle gate;
- :mod:`~inventory.lifecycle_policies.attest` — owners attest one client or many.

``run_lifecycle_policies`` is the periodic pass (the task ``inventory.tasks.lifecycle_policies``, beat hourly).
"""

from __future__ import annotations

import datetime as dt

from inventory.lifecycle_policies.attest import BulkAttest, client_attest, clients_attest
from inventory.lifecycle_policies.enforce import EnforceResult, enforce
from inventory.lifecycle_policies.evaluate import (
    FlagResult,
    Preview,
    attestation_due,
    flag_issues,
    flagged,
    open_issues_for,
    preview,
)
from inventory.lifecycle_policies.rules import (
    ACTIONS,
    ATTESTATION,
    DEFAULT_RULES,
    INACTIVITY,
    LifecyclePolicyError,
    LifecycleRules,
    parse_rules,
)
from inventory.lifecycle_policies.store import (
    active_lifecycle_rules,
    lifecycle_policy_publish,
    lifecycle_policy_restore,
)


def run_lifecycle_policies(*, now: dt.datetime | None = None) -> dict:
    """One pass under the active version: flag, resolve, then act on what is past its grace."""
    rules = active_lifecycle_rules()
    flags = flag_issues(rules, now=now)
    acted = enforce(rules, now=now)
    return {
        "version": rules.version,
        "monitor_only": rules.monitor_only,
        "flagged": flags.flagged,
        "resolved": flags.resolved,
        "acted": dict(acted.acted),
    }


__all__ = [
    "ACTIONS",
    "ATTESTATION",
    "DEFAULT_RULES",
    "INACTIVITY",
    "BulkAttest",
    "EnforceResult",
    "FlagResult",
    "LifecyclePolicyError",
    "LifecycleRules",
    "Preview",
    "active_lifecycle_rules",
    "attestation_due",
    "client_attest",
    "clients_attest",
    "enforce",
    "flag_issues",
    "flagged",
    "lifecycle_policy_publish",
    "lifecycle_policy_restore",
    "open_issues_for",
    "parse_rules",
    "preview",
    "run_lifecycle_policies",
]
