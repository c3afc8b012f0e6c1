"""Lifecycle policy versions: the active one, and publishing a new one (audited)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.db.models import Max

from inventory.lifecycle_policies.rules import LifecycleRules, parse_rules
from inventory.models import LifecyclePolicy
from portal.audit import Actor, audit_record


def active_lifecycle_rules() -> LifecycleRules:
    """The active version's rules. With no version published yet, the defaults apply as version 0, **monitor
    only**: issues are shown, nothing is enforced until an admin publishes a policy (after its preview)."""
    row = LifecyclePolicy.objects.filter(is_active=True).only("version", "rules", "monitor_only").first()
    if row is None:
        return parse_rules(None, version=0, monitor_only=True)
    return parse_rules(row.rules, version=row.version, monitor_only=row.monitor_only)


@transaction.atomic
def lifecycle_policy_publish(
    *, actor: Actor, rules: Mapping[str, Any], monitor_only: bool, note: str = "", created_by=None
) -> LifecyclePolicy:
    """Create and activate a new version (older ones stay, inactive: issues name the version that raised them)."""
    # Publishes queue on a lock of the table's oldest row (as the risk policy's do) so versions are consecutive.
    LifecyclePolicy.objects.select_for_update().order_by("pk").values_list("pk", flat=True).first()
    parsed = parse_rules(rules)
    current = LifecyclePolicy.objects.filter(is_active=True).first()
    version = (LifecyclePolicy.objects.aggregate(m=Max("version"))["m"] or 0) + 1
    stored = parsed.to_dict()
    before = None
    if current is not None:
        before = {"version": current.version, "rules": current.rules, "monitor_only": current.monitor_only}
        LifecyclePolicy.objects.filter(pk=current.pk).update(is_active=False)
    policy = LifecyclePolicy.objects.create(
        version=version,
        rules=stored,
        monitor_only=monitor_only,
        is_active=True,
        note=(note or "")[:255],
        created_by=created_by,
    )
    audit_record(
        actor=actor,
        action="lifecycle_policy.publish",
        object_type="lifecycle_policy",
        object_id=version,
        before=before,
        after={"version": version, "rules": stored, "monitor_only": monitor_only, "note": policy.note},
        reason=note or "",
    )
    return policy


@transaction.atomic
def lifecycle_policy_restore(*, actor: Actor, version: int, monitor_only: bool | None = None, created_by=None):
    """Publish an older version's rules again as a new version (versions are never edited)."""
    old = LifecyclePolicy.objects.get(version=version)
    return lifecycle_policy_publish(
        actor=actor,
        rules=old.rules,
        monitor_only=old.monitor_only if monitor_only is None else monitor_only,
        note=f"restored from v{version}",
        created_by=created_by,
    )
