"""The framework report's audit control: the audit log verified incrementally, a budget of events per call.

The state carried between calls (cached, no timeout) is the Merkle tree's compact form, so each report run
costs only the events sealed since the last one. The full check (every checkpoint, tiles, witnesses) is
``manage.py verify_audit``.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache as django_cache

from portal.tlog import merkle
from portal.tlog.entries import iter_entries
from portal.tlog.guard import missing_triggers
from portal.tlog.keys import log_verifiers
from portal.tlog.note import NoteError, open_checkpoint
from portal.tlog.sequencer import latest_checkpoint

AUDIT_CACHE_KEY = "registrar:audit-log-verified"
AUDIT_VERIFY_BUDGET = 5000  # events verified per report request; the rest waits for the next one


def audit_chain_status(*, budget: int = AUDIT_VERIFY_BUDGET) -> dict[str, Any]:
    """Verify the audit log from where the last call stopped, at most ``budget`` events per call.

    The state carried between calls is the tree's compact form (O(log n) hashes): each call appends the next
    events' leaf hashes and, on reaching the latest checkpoint, checks its signature and root. The full check
    (every checkpoint, tiles, witnesses) is ``manage.py verify_audit``. Keys: ``checked`` (events verified),
    ``head_id`` (the latest checkpoint's size), ``complete``, ``broken`` ({"event_id", "problem"} or None) and
    ``missing_triggers``.
    """
    stored, head = latest_checkpoint(verify=False)
    target = head.size
    fresh: dict[str, Any] = {"checked": 0, "hashes": [], "broken": None}
    state = django_cache.get(AUDIT_CACHE_KEY) or fresh
    if state["checked"] > target:
        state = fresh  # a state from another database: verify from the start
    if state["broken"] is None and state["checked"] < target:
        state = _verify_from(state, stored, target, budget=budget)
        django_cache.set(AUDIT_CACHE_KEY, state, timeout=None)
    missing = sorted(f"{name} on {table}" for table, name in missing_triggers())
    return {**state, "head_id": target, "complete": state["checked"] >= target, "missing_triggers": missing}


def audit_chain_refresh() -> dict[str, Any]:
    """Verify everything still unverified (bench and commands call this; O(new events))."""
    while True:
        status = audit_chain_status(budget=50_000)
        if status["complete"] or status["broken"]:
            return status


def _verify_from(state: dict[str, Any], stored, target: int, *, budget: int) -> dict[str, Any]:
    tree = merkle.CompactTree(state["checked"], [bytes.fromhex(h) for h in state["hashes"]])
    stop = min(target, tree.size + budget)
    for index, _event_id, _prev, _hash, entry in iter_entries(start=tree.size):
        if index != tree.size:
            return {**state, "broken": {"event_id": None, "problem": f"log index {tree.size} is missing"}}
        tree.append(merkle.leaf_hash(entry))
        if tree.size >= stop:
            break
    if tree.size < stop:
        return {**state, "broken": {"event_id": None, "problem": f"log index {tree.size} is missing"}}
    if tree.size == target:
        try:
            signed, _ = open_checkpoint(stored.note, log_verifiers())
        except NoteError as exc:
            return {**state, "broken": {"event_id": None, "problem": f"checkpoint {target} does not verify: {exc}"}}
        if signed.size != target or signed.root != tree.root():
            return {
                **state,
                "broken": {
                    "event_id": None,
                    "problem": f"the events no longer match signed "
                    f"checkpoint {target} (run manage.py verify_audit to locate the change)",
                },
            }
    return {"checked": tree.size, "hashes": [h.hex() for h in tree.hashes], "broken": None}
