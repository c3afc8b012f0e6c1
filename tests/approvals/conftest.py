"""Fixtures for the approvals tests: pending requests at each tier."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from inventory.choices import RiskTier
from portal.roles import Role
from tests.factories import RequestFactory, TokenFactory


@pytest.fixture(autouse=True)
def role_groups(db):
    """Role groups come from a data migration; transactional tests flush them, so make sure they exist."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)


@pytest.fixture
def make_request(db, catalogue, idp, team, owner):
    def make(tier: str = RiskTier.MEDIUM, **kwargs):
        token = kwargs.pop("token", None) or TokenFactory(
            owner=kwargs.get("owner", owner), allowed_scopes=["tickets:read", "repo:write"]
        )
        defaults = {
            "owner": owner,
            "team": team,
            "idp": idp,
            "token": token,
            "risk_tier": tier,
            "approvals_needed": 2 if tier == RiskTier.HIGH else 1,
            "requested_scopes": ["repo:write", "tickets:read"] if tier == RiskTier.HIGH else ["tickets:read"],
            "requested_ttl": 3600,
            "metadata": {"client_name": "agent", "redirect_uris": ["https://agent.example/cb"]},
            "reasons": [{"code": "high_sensitivity_scope", "message": "repo:write is high sensitivity"}]
            if tier == RiskTier.HIGH
            else [{"code": "not_internal_only", "message": "not internal-only"}],
            "outcome": "review",
        }
        defaults.update(kwargs)
        return RequestFactory(**defaults)

    return make


@pytest.fixture
def high_request(make_request):
    return make_request(RiskTier.HIGH, client_name="deploy-bot", software_id="com.example.deploy")


@pytest.fixture
def medium_request(make_request):
    return make_request(RiskTier.MEDIUM, client_name="ticket-bot")
