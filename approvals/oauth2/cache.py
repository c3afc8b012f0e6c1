"""What every registration reads and an admin changes now and then, kept per process for a few seconds.

Like the policy (``approvals.policy_store``): the default IdP, IdPs by name, each IdP's anonymous profile and the
scope catalogue. ``clear_caches()`` empties them (tests); a save or delete of what they hold (an IdP connection,
an anonymous profile, its owner or team, a scope) empties this process's at once (``invalidate_on_save``, from
``ApprovalsConfig.ready``), the other processes' within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from approvals.policy import ScopeInfo
from inventory.models import IdPConnection, ScopeDefinition

CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, Any]] = {}


def _cached(key: str, load: Callable[[], Any]) -> Any:
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = load()
    _cache[key] = (now, value)
    return value


def cached(key: str, load: Callable[[], Any]) -> Any:
    """``load()``'s value, kept for ``CACHE_SECONDS`` under ``key`` (for what other modules look up per request)."""
    return _cached(key, load)


def clear_caches() -> None:
    _cache.clear()


def _invalidate(**_kwargs: Any) -> None:
    _cache.clear()


def invalidate_on_save() -> None:
    """Empty the caches when an admin changes what they hold (called once, from ``ApprovalsConfig.ready``)."""
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save

    from approvals.models import AnonymousProfile
    from inventory.models import Team

    for model in (IdPConnection, ScopeDefinition, AnonymousProfile, Team, get_user_model()):
        post_save.connect(_invalidate, sender=model, dispatch_uid=f"oauth2_cache_{model._meta.label_lower}_save")
        post_delete.connect(_invalidate, sender=model, dispatch_uid=f"oauth2_cache_{model._meta.label_lower}_delete")


def default_idp() -> IdPConnection | None:
    """The IdP a registration goes to when its credential names none."""
    return _cached("default_idp", lambda: IdPConnection.objects.filter(is_default=True, enabled=True).first())


def idp_named(name: str) -> IdPConnection | None:
    """The enabled IdP connection called ``name`` (a per-IdP registration endpoint names it), or None."""
    return _cached(f"idp:{name}", lambda: IdPConnection.objects.filter(name=name, enabled=True).first())


def _load_catalogue() -> dict[str, ScopeInfo]:
    rows = ScopeDefinition.objects.filter(is_active=True).values_list("name", "sensitivity", "category")
    return {name: ScopeInfo(name, sensitivity, category) for name, sensitivity, category in rows}


def scope_catalogue(scopes: Iterable[str]) -> dict[str, ScopeInfo]:
    """The catalogue entries for ``scopes`` (unknown names are simply absent: the policy refuses them)."""
    if not scopes:
        return {}
    catalogue = _cached("catalogue", _load_catalogue)
    return {name: catalogue[name] for name in scopes if name in catalogue}
