"""The versioned policy thresholds: load the active version, publish a new one.

``Policy`` rows are never edited in place: a verdict records the version it was made under, so changing a
threshold means publishing a new version (``policy_publish``), which deactivates the old one in the same
transaction and writes one audit event. The Django admin goes through the same service.

``active_policy()`` is read on every registration; it keeps the parsed ``PolicyConfig`` for a couple of
seconds per process so a burst of registrations does not re-read and re-validate the same row. A publish in
this process clears it at once; other processes follow within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.db.models import Max

from approvals.models import Policy
from approvals.policy import DEFAULT_THRESHOLDS, PolicyConfig
from portal.audit import Actor, audit_record

CACHE_SECONDS = 2.0

_lock = threading.Lock()
_cached: tuple[float, PolicyConfig] | None = None


class PolicyError(ValueError):
    """The thresholds are invalid; the message lists every problem."""


def clear_cache() -> None:
    global _cached
    with _lock:
        _cached = None


def active_policy(*, use_cache: bool = True) -> PolicyConfig:
    """The active policy version as a validated ``PolicyConfig``.

    With no active row (a fresh database before migrations ran their data step) the defaults apply as
    version 1, which is exactly what migration 0003 creates.
    """
    global _cached
    now = time.monotonic()
    if use_cache:
        cached = _cached
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
    row = Policy.objects.filter(is_active=True).only("version", "thresholds").first()
    config = PolicyConfig(version=1) if row is None else PolicyConfig.from_dict(row.thresholds or {}, row.version)
    with _lock:
        _cached = (now, config)
    return config


def _validated(thresholds: Mapping[str, Any], version: int) -> PolicyConfig:
    try:
        return PolicyConfig.from_dict(thresholds, version)
    except ValueError as exc:
        raise PolicyError(str(exc).removeprefix("invalid policy config: ")) from exc


@transaction.atomic
def policy_publish(*, actor: Actor, thresholds: Mapping[str, Any], note: str = "", created_by=None) -> Policy:
    """Create and activate a new policy version (the previous one stays, inactive, for old verdicts)."""
    # Publishes queue on the oldest version's row, which never changes and is never deleted, so two admins
    # publishing at once get consecutive versions. (Locking the active row instead does not work under READ
    # COMMITTED: the publisher that waited finds the row no longer active, gets nothing, and its new version
    # then clashes with the winner's on policy_one_active.)
    Policy.objects.select_for_update().order_by("pk").values_list("pk", flat=True).first()
    current = Policy.objects.filter(is_active=True).first()
    version = (Policy.objects.aggregate(m=Max("version"))["m"] or 0) + 1
    config = _validated(thresholds, version)
    stored = config.to_dict()
    before = None
    if current is not None:
        before = {"version": current.version, "thresholds": current.thresholds}
        Policy.objects.filter(pk=current.pk).update(is_active=False)
    policy = Policy.objects.create(
        version=version, thresholds=stored, is_active=True, note=(note or "")[:255], created_by=created_by
    )
    audit_record(
        actor=actor,
        action="policy.publish",
        object_type="policy",
        object_id=version,
        before=before,
        after={"version": version, "thresholds": stored, "note": policy.note},
        reason=note or "",
        policy_version=version,
    )
    # Clear now (this process, this transaction sees the new row) and again after commit (a concurrent
    # registration may have cached the old version in between).
    clear_cache()
    transaction.on_commit(clear_cache)
    return policy


def validate_thresholds(thresholds: Mapping[str, Any]) -> PolicyConfig:
    """Raise PolicyError listing every problem with ``thresholds`` (for forms, before publishing)."""
    return _validated(thresholds, 1)


def effective_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every threshold with the value it takes, defaults filled in (a stored version may hold only some)."""
    return PolicyConfig.from_dict(thresholds or {}, 1).to_dict()


def unknown_thresholds(thresholds: Mapping[str, Any]) -> list[str]:
    """Keys that name no threshold (``PolicyConfig.from_dict`` would ignore them: a typo would go unnoticed)."""
    known = set(DEFAULT_THRESHOLDS)
    return sorted(str(key) for key in thresholds if key not in known)


def threshold_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(name, old, new)`` for each threshold whose effective value differs, in name order."""
    old, new = effective_thresholds(before), effective_thresholds(after)
    return [(name, old[name], new[name]) for name in sorted(new) if old.get(name) != new[name]]
