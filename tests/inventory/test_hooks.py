"""inventory.hooks: how inventory reaches approvals without importing it, and what happens with nothing registered."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from inventory import hooks
from inventory.breakglass import BreakGlassError, breakglass_preview
from inventory.ceilings import DEFAULT_TTL_CEILINGS
from inventory.choices import RiskTier
from inventory.lifecycle import LifecycleError, client_renew, tier_ttl_ceiling
from inventory.models import Client
from tests.factories import ClientFactory

ROOT = Path(__file__).resolve().parents[2]
# The modules the lifecycle gate is made of: none may reach approvals by import, apps.get_model or import_module.
# (tests/test_architecture.py holds every module of every app to the layers; this names the gate's files.)
GATE = [
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "inventory" / "lifecycle").glob("*.py")),
    "inventory/quotas.py",
    "inventory/containment.py",
    "inventory/breakglass.py",
    "inventory/hooks.py",
    "inventory/ceilings.py",
]


@pytest.mark.parametrize("module", GATE)
def test_the_gate_never_reaches_approvals_by_name(module):
    tree = ast.parse((ROOT / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("approvals"), f"{module} imports {node.module}"
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("approvals") for a in node.names), module
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("get_model", "import_module"):
            pytest.fail(f"{module}:{node.lineno} looks a model or module up by name")


def test_approvals_registers_its_hooks_at_start_up():
    assert hooks.containment_resolver("token") is not None
    assert hooks.containment_resolver("issuer") is not None
    assert hooks.containment_resolver("policy") is not None


@pytest.fixture
def without_approvals():
    saved = hooks.reset_for_tests()
    yield
    hooks.restore(saved)


@pytest.mark.django_db
def test_without_approvals_inventory_degrades_safely(without_approvals, owner, security_user):
    assert hooks.policy_limits() == hooks.PolicyLimits()
    assert tier_ttl_ceiling(RiskTier.MEDIUM) == DEFAULT_TTL_CEILINGS["medium"]
    high = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    expires = high.expires_at
    with pytest.raises(LifecycleError, match="approvals app is not installed"):
        client_renew(client=high, user=owner)  # never granted just because nobody can review it
    assert Client.objects.get(pk=high.pk).expires_at == expires
    with pytest.raises(BreakGlassError, match="not available"):
        breakglass_preview(user=security_user, scope="token", value="rat_x", action="suspend")


def test_policy_limits_fall_back_per_tier():
    limits = hooks.PolicyLimits(ttl_ceilings={"low": 600}, renewal_approvals={"medium": 3})
    assert limits.ttl_ceiling("low") == 600
    assert limits.ttl_ceiling("high") == DEFAULT_TTL_CEILINGS["high"]
    assert limits.ttl_ceiling("unknown") == min(DEFAULT_TTL_CEILINGS.values())
    assert (limits.approvals_for("medium"), limits.approvals_for("low"), limits.approvals_for("other")) == (3, 1, 2)
