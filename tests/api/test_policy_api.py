"""/api/v1/policy/: admins publish versions (as saving in Django admin does), security reads, nobody else."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals.models import Policy
from approvals.policy_store import active_policy
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def as_user(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def test_admin_publishes_a_version_that_becomes_active(admin_user):
    response = as_user(admin_user).post(
        "/api/v1/policy/", {"thresholds": {"low_ttl_seconds": 1800}, "note": "shorter"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["is_active"] is True and body["thresholds"]["low_ttl_seconds"] == 1800
    assert active_policy(use_cache=False).version == body["version"]
    assert AuditEvent.objects.filter(action="policy.publish", object_id=str(body["version"])).count() == 1
    listed = as_user(admin_user).get("/api/v1/policy/").json()["results"]
    assert listed[0]["version"] == body["version"]


def test_invalid_thresholds_are_400_and_publish_nothing(admin_user):
    before = Policy.objects.count()
    response = as_user(admin_user).post(
        "/api/v1/policy/", {"thresholds": {"approvals_high": 0, "low_ttl_seconds": "x"}}, format="json"
    )
    assert response.status_code == 400 and "thresholds" in response.json()
    assert Policy.objects.count() == before and not AuditEvent.objects.filter(action="policy.publish").exists()


def test_security_reads_and_others_are_refused(security_user, owner, approver):
    assert as_user(security_user).get("/api/v1/policy/").status_code == 200
    assert as_user(security_user).post("/api/v1/policy/", {"thresholds": {}}, format="json").status_code == 403
    for person in (owner, approver):
        assert as_user(person).get("/api/v1/policy/").status_code == 403
    assert not AuditEvent.objects.filter(action="policy.publish").exists()
