"""/api/v1/idp-connections/: admins set credentials write-only and test the connection; nobody else may."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from inventory.choices import IdPKind
from portal.models import AuditEvent
from tests.factories import IdPFactory

pytestmark = pytest.mark.django_db
SECRET = "s3cret-initial-access-token"


def as_user(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def unreachable_idp(db):
    config = {"issuer": "http://127.0.0.1:9", "registration_endpoint": "http://127.0.0.1:9/reg", "token_endpoint": "x"}
    return IdPFactory(name="unreachable", kind=IdPKind.RFC7591, config=config)


def test_admin_sets_and_clears_credentials_never_seeing_a_value(admin_user, unreachable_idp):
    api = as_user(admin_user)
    url = f"/api/v1/idp-connections/{unreachable_idp.pk}/secrets/"
    response = api.post(url, {"values": {"initial_access_token": SECRET}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["changed"] == ["initial_access_token"]
    assert response.json()["connection"]["credentials"] == {"initial_access_token": True, "admin_token": False}
    unreachable_idp.refresh_from_db()
    assert unreachable_idp.secrets["initial_access_token"] == SECRET
    listed = api.get("/api/v1/idp-connections/")
    assert SECRET not in listed.content.decode()
    events = AuditEvent.objects.filter(action="idp.secrets_set")
    assert events.count() == 1 and SECRET not in json.dumps([events[0].before, events[0].after, events[0].reason])
    cleared = api.post(url, {"clear": ["initial_access_token"]}, format="json")
    assert cleared.json()["connection"]["credentials"]["initial_access_token"] is False


def test_unknown_or_empty_credentials_are_400_and_store_nothing(admin_user, unreachable_idp):
    api = as_user(admin_user)
    url = f"/api/v1/idp-connections/{unreachable_idp.pk}/secrets/"
    for values in ({"no_such_name": "x"}, {"initial_access_token": "   "}):
        response = api.post(url, {"values": values}, format="json")
        assert response.status_code == 400 and "values" in response.json()
    unreachable_idp.refresh_from_db()
    assert not unreachable_idp.secrets and not AuditEvent.objects.filter(action="idp.secrets_set").exists()


def test_connection_test_reports_and_is_audited(admin_user, unreachable_idp):
    result = as_user(admin_user).post(f"/api/v1/idp-connections/{unreachable_idp.pk}/test/")
    assert result.status_code == 200 and result.json()["ok"] is False and result.json()["error"]
    assert AuditEvent.objects.filter(action="idp.connection_test").count() == 1


def test_idp_connections_are_for_admins_only(security_user, owner, unreachable_idp):
    for person in (security_user, owner):
        api = as_user(person)
        assert api.get("/api/v1/idp-connections/").status_code == 403
        denied = api.post(
            f"/api/v1/idp-connections/{unreachable_idp.pk}/secrets/",
            {"values": {"initial_access_token": "x"}},
            format="json",
        )
        assert denied.status_code == 403
        assert api.post(f"/api/v1/idp-connections/{unreachable_idp.pk}/test/").status_code == 403
    unreachable_idp.refresh_from_db()
    assert not unreachable_idp.secrets and not AuditEvent.objects.filter(action__startswith="idp.").exists()
