"""/api/v1/lifecycle-policy/: security and admins read and preview, only admins publish (as on the page)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.choices import RiskTier
from inventory.lifecycle_policies import active_lifecycle_rules
from inventory.models import Client, LifecyclePolicy
from portal.models import AuditEvent
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

RULES = {"attestation": {"days": {"high": 30, "medium": 90, "low": 180}, "grace_days": 3, "action": "suspend"}}


def as_user(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def test_preview_then_publish(admin_user, security_user, owner):
    for _ in range(2):
        old = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
        Client.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    what_if = as_user(security_user).post("/api/v1/lifecycle-policy/preview/", {"rules": RULES}, format="json")
    assert what_if.status_code == 200, what_if.content
    attestation = next(r for r in what_if.json()["rules"] if r["rule"] == "attestation")
    assert attestation["flagged"] == 2 and attestation["by_owner"] == {owner.username: 2}
    assert not LifecyclePolicy.objects.exists()  # a preview publishes nothing
    refused = as_user(security_user).post("/api/v1/lifecycle-policy/", {"rules": RULES}, format="json")
    assert refused.status_code == 403 and not LifecyclePolicy.objects.exists()
    published = as_user(admin_user).post(
        "/api/v1/lifecycle-policy/", {"rules": RULES, "monitor_only": True, "note": "try"}, format="json"
    )
    assert published.status_code == 201 and published.json()["version"] == 1 and published.json()["monitor_only"]
    assert active_lifecycle_rules().version == 1
    assert AuditEvent.objects.filter(action="lifecycle_policy.publish").count() == 1
    state = as_user(security_user).get("/api/v1/lifecycle-policy/").json()
    assert state["active"]["version"] == 1 and [v["version"] for v in state["versions"]] == [1]


def test_invalid_rules_are_400_with_the_problem_and_publish_nothing(admin_user):
    bad = as_user(admin_user).post(
        "/api/v1/lifecycle-policy/", {"rules": {"attestation": {"grace_days": 90}}}, format="json"
    )
    assert bad.status_code == 400 and "attestation.grace_days" in bad.json()["rules"][0]
    assert (
        not LifecyclePolicy.objects.exists() and not AuditEvent.objects.filter(action__startswith="lifecycle").exists()
    )


def test_owners_are_refused(owner):
    assert as_user(owner).get("/api/v1/lifecycle-policy/").status_code == 403
    assert as_user(owner).post("/api/v1/lifecycle-policy/preview/", {"rules": RULES}, format="json").status_code == 403


def test_deeply_nested_rules_on_the_page_are_an_error_not_a_500(client, admin_user):
    client.force_login(admin_user)
    page = client.post("/inventory/lifecycle-policy/", {"action": "preview", "rules": "[" * 10_000 + "]" * 10_000})
    assert page.status_code == 200 and "nested too deeply" in page.content.decode()
    assert not LifecyclePolicy.objects.exists()
