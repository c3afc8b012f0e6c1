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


@pytest.mark.django_db
def test_the_pages_read_approvals_data_only_through_the_hooks(without_approvals, owner):
    """With approvals' hooks unregistered its rows exist but inventory's reads see none of them; registered
    again, the same reads see them."""
    from approvals.models import Decision
    from inventory.reports.controls import failing_clients
    from inventory.selectors.dashboard import dashboard_data
    from inventory.selectors.explain import client_explain
    from inventory.selectors.owners import clients_of_owner
    from tests.factories import RequestFactory, UserFactory

    client = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    origin = RequestFactory(public_id=client.registration_id, owner=owner, state="approved", outcome="review")
    RequestFactory(client=client, owner=owner, kind="renewal", state="pending")
    for approver in (UserFactory(), UserFactory()):
        Decision.objects.create(request=origin, approver=approver, kind="approve")

    def reads():
        explain = client_explain(client)
        return {
            "history": [item["reg_request"].public_id for item in explain["reg_requests"]],
            "origin": explain["origin"],
            "renewal_pending": clients_of_owner(owner).get().renewal_pending,
            "registrations": dashboard_data()["registrations"]["totals"]["human-approved"],
            "owner_live_limit": hooks.owner_live_limit(),
        }

    assert reads() == {
        "history": [],
        "origin": None,
        "renewal_pending": False,
        "registrations": 0,
        "owner_live_limit": None,
    }
    # The two-person control reads the client's own column, which approvals' triggers keep in the database
    # (approvals.approval_flags), not a hook: registered or not, it says what the decisions say.
    assert client not in failing_clients("human_approval_high_tier")
    from approvals import inventory_hooks

    inventory_hooks.register()
    seen = reads()
    assert seen["history"][0] == origin.public_id and len(seen["history"]) == 2
    assert seen["origin"] == origin
    assert seen["renewal_pending"] is True
    assert seen["registrations"] == 1
    assert client not in failing_clients("human_approval_high_tier")
    assert isinstance(seen["owner_live_limit"], int)


@pytest.mark.django_db
def test_the_home_page_and_badge_count_what_the_apps_register(owner):
    """portal knows no app: its home tiles and the review badge are what inventory and approvals register."""
    from datetime import timedelta

    from django.utils import timezone

    from portal import context_processors, home
    from tests.factories import RequestFactory, UserFactory

    approver = UserFactory(roles=["approver", "owner"])
    ClientFactory(owner=approver, expires_at=timezone.now() + timedelta(days=30))
    ClientFactory(owner=approver, expires_at=timezone.now() + timedelta(days=2))
    RequestFactory(owner=owner, state="pending")  # someone else's: the approver may decide it
    RequestFactory(owner=approver, state="pending")  # their own: never theirs to decide
    assert home.home_summary(approver) == {
        "my_live_clients": 2,  # inventory's tiles
        "expiring_soon": 1,
        "pending_approvals": 1,  # approvals' tiles
        "my_pending_requests": 1,
    }
    saved = dict(home._tile_providers)
    del home._tile_providers["approvals"]
    try:
        assert home.home_summary(approver) == {"my_live_clients": 2, "expiring_soon": 1}
    finally:
        home._tile_providers.update(saved)

    class HttpRequest:
        user = approver

    assert int(context_processors.registrar(HttpRequest())["nav_counts"]["pending_approvals"]) == 1
