"""Versioned policy thresholds: publish creates a new version (service and Django admin), never edits one."""

from __future__ import annotations

import pytest

from approvals.models import Policy
from approvals.policy_store import PolicyError, active_policy, policy_publish
from portal.audit import Actor
from portal.models import AuditEvent
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401

pytestmark = pytest.mark.django_db


def test_migration_default_is_version_1():
    config = active_policy()
    assert config.version == 1 and config.low_ttl_seconds == 86400 and config.approvals_high == 2


def test_publish_creates_and_activates_a_new_version(admin_user):
    published = policy_publish(actor=Actor.user(admin_user), thresholds={"low_ttl_seconds": 3600}, note="shorter")
    assert published.version == 2 and published.is_active
    assert list(Policy.objects.order_by("version").values_list("version", "is_active")) == [(1, False), (2, True)]
    assert active_policy().low_ttl_seconds == 3600 and active_policy().version == 2
    event = AuditEvent.objects.get(action="policy.publish")
    assert event.before["version"] == 1 and event.after["thresholds"]["low_ttl_seconds"] == 3600
    assert event.reason == "shorter" and event.policy_version == 2


def test_invalid_thresholds_are_refused_and_nothing_changes(admin_user):
    with pytest.raises(PolicyError) as exc:
        policy_publish(actor=Actor.user(admin_user), thresholds={"approvals_high": 0, "low_ttl_seconds": "x"})
    assert "approvals_high" in str(exc.value) and "low_ttl_seconds" in str(exc.value)
    assert Policy.objects.count() == 1 and Policy.objects.get().is_active
    assert not AuditEvent.objects.filter(action="policy.publish").exists()


def test_admin_save_publishes_a_new_version(client, admin_user):
    client.force_login(admin_user)
    v1 = Policy.objects.get()
    response = client.post(
        f"/admin/approvals/policy/{v1.pk}/change/",
        {"thresholds": '{"max_spawn_depth": 1}', "note": "no grandchildren"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    v1.refresh_from_db()
    assert v1.thresholds == {} and not v1.is_active  # the old version is untouched, only deactivated
    v2 = Policy.objects.get(is_active=True)
    assert v2.version == 2 and v2.thresholds["max_spawn_depth"] == 1 and v2.created_by == admin_user
    assert active_policy().max_spawn_depth == 1


def test_admin_shows_threshold_errors(client, admin_user):
    client.force_login(admin_user)
    v1 = Policy.objects.get()
    response = client.post(
        f"/admin/approvals/policy/{v1.pk}/change/", {"thresholds": '{"approvals_medium": 0}', "note": ""}
    )
    assert response.status_code == 200 and "approvals_medium must be between 1 and 10" in response.content.decode()
    assert Policy.objects.count() == 1
