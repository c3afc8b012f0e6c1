"""/api/v1/scopes/, /teams/, /trusted-issuers/, /trusted-cimd-domains/: Django admin's configuration, for admins
only; bad input is a 400 naming the field and writes nothing; each change is one ``<type>.admin_*`` event with
the admin's before/after."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from inventory.models import ScopeDefinition, Team
from portal.models import AuditEvent
from tests.factories import ScopeFactory, UserFactory

pytestmark = pytest.mark.django_db


def as_user(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def non_admins(owner, approver, security_user):
    return [owner, approver, security_user]


# --- scopes --------------------------------------------------------------------------------------


def test_admin_adds_changes_and_deactivates_a_scope_each_audited(admin_user):
    api = as_user(admin_user)
    created = api.post(
        "/api/v1/scopes/",
        {"name": "wiki:read", "description": "Read the wiki", "sensitivity": "low", "category": "internal_tool"},
        format="json",
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    assert ScopeDefinition.objects.get(pk=pk).name == "wiki:read"
    event = AuditEvent.objects.get(action="scope.admin_create")
    assert event.object_id == str(pk) and event.after["name"] == "wiki:read" and event.actor_id == str(admin_user.pk)

    changed = api.patch(f"/api/v1/scopes/{pk}/", {"sensitivity": "medium"}, format="json")
    assert changed.status_code == 200 and changed.json()["sensitivity"] == "medium"
    event = AuditEvent.objects.get(action="scope.admin_change")
    assert event.before == {"sensitivity": "low"} and event.after == {"sensitivity": "medium"}

    off = api.post(f"/api/v1/scopes/{pk}/deactivate/")
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert ScopeDefinition.objects.get(pk=pk).is_active is False
    last = AuditEvent.objects.filter(action="scope.admin_change").order_by("-pk")[0]
    assert last.before == {"is_active": True} and last.after == {"is_active": False}
    assert [s["name"] for s in api.get("/api/v1/scopes/?is_active=false").json()["results"]] == ["wiki:read"]


def test_a_change_that_changes_nothing_records_nothing(admin_user):
    scope = ScopeFactory(name="docs:read")
    response = as_user(admin_user).patch(f"/api/v1/scopes/{scope.pk}/", {"description": "test scope"}, format="json")
    assert response.status_code == 200
    assert not AuditEvent.objects.filter(action__startswith="scope.").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x:read", "sensitivity": "extreme", "category": "internal_tool"}, "sensitivity"),
        ({"name": "", "sensitivity": "low", "category": "internal_tool"}, "name"),
        ({"name": "docs:read", "sensitivity": "low", "category": "internal_tool"}, "name"),  # taken
        ({"name": "y:read", "sensitivity": "low"}, "category"),
    ],
)
def test_bad_scope_is_400_naming_the_field_and_writes_nothing(admin_user, body, field):
    ScopeFactory(name="docs:read")
    response = as_user(admin_user).post("/api/v1/scopes/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert ScopeDefinition.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="scope.").exists()


def test_scopes_are_for_admins_only(non_admins):
    scope = ScopeFactory(name="docs:read")
    for person in non_admins:
        api = as_user(person)
        assert api.get("/api/v1/scopes/").status_code == 403
        body = {"name": "z:read", "sensitivity": "low", "category": "internal_tool"}
        assert api.post("/api/v1/scopes/", body, format="json").status_code == 403
        assert api.patch(f"/api/v1/scopes/{scope.pk}/", {"is_active": False}, format="json").status_code == 403
        assert api.post(f"/api/v1/scopes/{scope.pk}/deactivate/").status_code == 403
    scope.refresh_from_db()
    assert scope.is_active and ScopeDefinition.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="scope.").exists()


def test_scopes_cannot_be_deleted(admin_user):
    scope = ScopeFactory(name="docs:read")
    assert as_user(admin_user).delete(f"/api/v1/scopes/{scope.pk}/").status_code == 405
    assert ScopeDefinition.objects.filter(pk=scope.pk).exists()


# --- teams ---------------------------------------------------------------------------------------


def test_admin_creates_a_team_changes_it_and_its_members_each_audited(admin_user, owner):
    api = as_user(admin_user)
    created = api.post("/api/v1/teams/", {"name": "Data", "slug": "data", "manager": owner.username}, format="json")
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    team = Team.objects.get(pk=pk)
    assert team.manager == owner and created.json()["members"] == []
    assert AuditEvent.objects.get(action="team.admin_create").after["slug"] == "data"

    assert api.patch(f"/api/v1/teams/{pk}/", {"max_live_clients": 5}, format="json").status_code == 200
    assert Team.objects.get(pk=pk).max_live_clients == 5

    dana = UserFactory(username="dana")
    added = api.post(f"/api/v1/teams/{pk}/members/", {"add": ["olivia", "dana"]}, format="json")
    assert added.status_code == 200 and sorted(added.json()["members"]) == ["dana", "olivia"]
    event = AuditEvent.objects.filter(action="team.admin_change").order_by("-pk")[0]
    assert event.before == {"members": []} and event.after == {"members": ["dana", "olivia"]}

    removed = api.post(f"/api/v1/teams/{pk}/members/", {"remove": ["olivia"]}, format="json")
    assert removed.status_code == 200 and removed.json()["members"] == ["dana"]
    assert list(team.members.all()) == [dana]
    assert AuditEvent.objects.filter(action="team.admin_change").count() == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Data", "slug": "not a slug"}, "slug"),
        ({"name": "Platform", "slug": "data"}, "name"),  # taken
        ({"name": "Data", "slug": "data", "manager": "nobody-such"}, "manager"),
        ({"name": "Data", "slug": "data", "notify_email": "not-an-address"}, "notify_email"),
    ],
)
def test_bad_team_is_400_naming_the_field_and_writes_nothing(admin_user, team, body, field):
    response = as_user(admin_user).post("/api/v1/teams/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert list(Team.objects.values_list("name", flat=True)) == ["Platform"]
    assert not AuditEvent.objects.filter(action__startswith="team.").exists()


def test_bad_member_change_is_400_and_changes_nothing(admin_user, team, owner):
    team.members.add(owner)
    api = as_user(admin_user)
    for body, field in (({"add": ["nobody-such"]}, "add"), ({}, "add"), ({"remove": ["ghost"]}, "remove")):
        response = api.post(f"/api/v1/teams/{team.pk}/members/", body, format="json")
        assert response.status_code == 400 and field in response.json(), response.content
    assert list(team.members.all()) == [owner]
    assert not AuditEvent.objects.filter(action__startswith="team.").exists()


def test_teams_are_for_admins_only_and_never_deleted(non_admins, admin_user, team):
    for person in non_admins:
        api = as_user(person)
        assert api.get("/api/v1/teams/").status_code == 403
        assert api.post("/api/v1/teams/", {"name": "X", "slug": "x"}, format="json").status_code == 403
        assert api.patch(f"/api/v1/teams/{team.pk}/", {"name": "Y"}, format="json").status_code == 403
        assert (
            api.post(f"/api/v1/teams/{team.pk}/members/", {"add": [person.username]}, format="json").status_code == 403
        )
    assert as_user(admin_user).delete(f"/api/v1/teams/{team.pk}/").status_code == 405
    team.refresh_from_db()
    assert team.name == "Platform" and not team.members.exists() and Team.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="team.").exists()
