"""/api/v1/scopes/, /teams/, /trusted-issuers/, /trusted-cimd-domains/: Django admin's configuration, for admins
only; bad input is a 400 naming the field and writes nothing; each change is one ``<type>.admin_*`` event with
the admin's before/after."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals.models import TrustedCimdDomain, TrustedIssuer
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
        ({"name": "Data", "slug": "data", "manager": "olivia\x00"}, "manager"),  # PostgreSQL would 500 on the NUL
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
    for body, field in (
        ({"add": ["nobody-such"]}, "add"),
        ({}, "add"),
        ({"remove": ["ghost"]}, "remove"),
        ({"add": ["olivia\x00"]}, "add"),
    ):
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


# --- trusted issuers -----------------------------------------------------------------------------

JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "kid": "k1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    ]
}


def issuer_body(**changes) -> dict:
    body = {
        "name": "CI runners",
        "kind": "oidc",
        "issuer": "https://token.actions.example.com",
        "audience": "registrar",
        "jwks": JWKS,
        "subject": "repo:acme/*",
        "owner": "olivia",
        "purpose": "CI deploy agents",
        "allowed_scopes": ["docs:read"],
        "allowed_networks": ["10.0.0.0/8"],
    }
    return {**body, **changes}


def test_admin_adds_changes_and_deactivates_a_trusted_issuer_each_audited(admin_user, owner, team):
    api = as_user(admin_user)
    created = api.post("/api/v1/trusted-issuers/", issuer_body(team="platform"), format="json")
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    issuer = TrustedIssuer.objects.get(pk=pk)
    assert issuer.owner == owner and issuer.team == team and issuer.enabled and issuer.jwks == JWKS
    event = AuditEvent.objects.get(action="trusted_issuer.admin_create")
    assert event.object_id == str(pk) and event.after["subject"] == "repo:acme/*"

    changed = api.patch(f"/api/v1/trusted-issuers/{pk}/", {"max_ttl_seconds": 3600}, format="json")
    assert changed.status_code == 200 and changed.json()["max_ttl_seconds"] == 3600
    event = AuditEvent.objects.get(action="trusted_issuer.admin_change")
    assert event.before == {"max_ttl_seconds": 86400} and event.after == {"max_ttl_seconds": 3600}

    off = api.post(f"/api/v1/trusted-issuers/{pk}/deactivate/")
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert not TrustedIssuer.objects.get(pk=pk).enabled
    assert AuditEvent.objects.filter(action="trusted_issuer.admin_change").count() == 2


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"allowed_networks": ["not-a-network"]}, "allowed_networks"),
        ({"owner": "nobody-such"}, "owner"),
        ({"kind": "saml"}, "kind"),
        ({"jwks": {}}, "jwks"),
        ({"jwks": ["not", "an", "object"]}, "jwks"),
        ({"purpose": ""}, "purpose"),
    ],
)
def test_bad_trusted_issuer_is_400_naming_the_field_and_writes_nothing(admin_user, owner, changes, field):
    response = as_user(admin_user).post("/api/v1/trusted-issuers/", issuer_body(**changes), format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not TrustedIssuer.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="trusted_issuer.").exists()


def test_bad_change_to_a_trusted_issuer_changes_nothing(admin_user, owner):
    api = as_user(admin_user)
    pk = api.post("/api/v1/trusted-issuers/", issuer_body(), format="json").json()["id"]
    response = api.patch(f"/api/v1/trusted-issuers/{pk}/", {"allowed_networks": ["300.1.1.1/8"]}, format="json")
    assert response.status_code == 400 and "allowed_networks" in response.json()
    assert TrustedIssuer.objects.get(pk=pk).allowed_networks == ["10.0.0.0/8"]
    assert not AuditEvent.objects.filter(action="trusted_issuer.admin_change").exists()


def test_trusted_issuers_are_for_admins_only(non_admins, admin_user):
    pk = as_user(admin_user).post("/api/v1/trusted-issuers/", issuer_body(), format="json").json()["id"]
    for person in non_admins:
        api = as_user(person)
        assert api.get("/api/v1/trusted-issuers/").status_code == 403
        assert api.post("/api/v1/trusted-issuers/", issuer_body(name="x"), format="json").status_code == 403
        assert api.patch(f"/api/v1/trusted-issuers/{pk}/", {"enabled": False}, format="json").status_code == 403
        assert api.post(f"/api/v1/trusted-issuers/{pk}/deactivate/").status_code == 403
    assert as_user(admin_user).delete(f"/api/v1/trusted-issuers/{pk}/").status_code == 405
    assert TrustedIssuer.objects.get(pk=pk).enabled and TrustedIssuer.objects.count() == 1
    assert AuditEvent.objects.filter(action__startswith="trusted_issuer.").count() == 1  # the create only


# --- trusted CIMD domains ------------------------------------------------------------------------


def test_admin_trusts_changes_and_deactivates_a_cimd_domain_each_audited(admin_user):
    api = as_user(admin_user)
    created = api.post(
        "/api/v1/trusted-cimd-domains/", {"domain": "Tools.Example.com.", "note": "our tools"}, format="json"
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    assert created.json()["domain"] == "tools.example.com"  # the model's clean, as in the admin
    assert TrustedCimdDomain.objects.get(pk=pk).domain == "tools.example.com"
    assert AuditEvent.objects.get(action="trusted_cimd_domain.admin_create").after["domain"] == "tools.example.com"

    changed = api.patch(f"/api/v1/trusted-cimd-domains/{pk}/", {"include_subdomains": True}, format="json")
    assert changed.status_code == 200 and changed.json()["include_subdomains"] is True
    event = AuditEvent.objects.get(action="trusted_cimd_domain.admin_change")
    assert event.before == {"include_subdomains": False} and event.after == {"include_subdomains": True}

    off = api.post(f"/api/v1/trusted-cimd-domains/{pk}/deactivate/")
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert not TrustedCimdDomain.objects.get(pk=pk).enabled
    assert AuditEvent.objects.filter(action="trusted_cimd_domain.admin_change").count() == 2


@pytest.mark.parametrize(
    "domain",
    ["https://example.org/", "example.org:443", "not a domain", "", "EXAMPLE.net"],  # the last: taken, any case
)
def test_bad_cimd_domain_is_400_naming_the_field_and_writes_nothing(admin_user, domain):
    TrustedCimdDomain.objects.create(domain="example.net")
    response = as_user(admin_user).post("/api/v1/trusted-cimd-domains/", {"domain": domain}, format="json")
    assert response.status_code == 400 and "domain" in response.json(), response.content
    assert list(TrustedCimdDomain.objects.values_list("domain", flat=True)) == ["example.net"]
    assert not AuditEvent.objects.filter(action__startswith="trusted_cimd_domain.").exists()


def test_trusted_cimd_domains_are_for_admins_only(non_admins, admin_user):
    trusted = TrustedCimdDomain.objects.create(domain="example.net")
    url = f"/api/v1/trusted-cimd-domains/{trusted.pk}/"
    for person in non_admins:
        api = as_user(person)
        assert api.get("/api/v1/trusted-cimd-domains/").status_code == 403
        assert api.post("/api/v1/trusted-cimd-domains/", {"domain": "evil.example"}, format="json").status_code == 403
        assert api.patch(url, {"include_subdomains": True}, format="json").status_code == 403
        assert api.post(f"{url}deactivate/").status_code == 403
    assert as_user(admin_user).delete(url).status_code == 405
    trusted.refresh_from_db()
    assert trusted.enabled and not trusted.include_subdomains and TrustedCimdDomain.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="trusted_cimd_domain.").exists()


# --- people's roles ------------------------------------------------------------------------------


def test_admin_sets_a_persons_roles_one_audited_change_other_groups_kept(admin_user, owner):
    from django.contrib.auth.models import Group

    other = Group.objects.create(name="newsletter")
    owner.groups.add(other)
    api = as_user(admin_user)
    assert api.get("/api/v1/people/olivia/").json()["roles"] == ["owner"]
    response = api.post("/api/v1/people/olivia/roles/", {"roles": ["owner", "approver"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["roles"] == ["approver", "owner"]
    assert set(owner.groups.values_list("name", flat=True)) == {"owner", "approver", "newsletter"}
    event = AuditEvent.objects.get(action="user.admin_change")
    assert event.object_id == str(owner.pk)
    assert event.before == {"groups": ["newsletter", "owner"]}
    assert event.after == {"groups": ["approver", "newsletter", "owner"]}
    assert [p["username"] for p in api.get("/api/v1/people/").json()["results"]] == ["olivia", "root-admin"]


@pytest.mark.parametrize(
    ("body", "field"), [({"roles": ["emperor"]}, "roles"), ({}, "roles"), ({"roles": "admin"}, "roles")]
)
def test_bad_roles_are_400_and_change_nothing(admin_user, owner, body, field):
    response = as_user(admin_user).post("/api/v1/people/olivia/roles/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert list(owner.groups.values_list("name", flat=True)) == ["owner"]
    assert not AuditEvent.objects.filter(action="user.admin_change").exists()


def test_roles_are_set_by_admins_only(non_admins, owner):
    for person in non_admins:
        api = as_user(person)
        assert api.get("/api/v1/people/").status_code == 403
        assert api.post("/api/v1/people/olivia/roles/", {"roles": ["admin"]}, format="json").status_code == 403
    assert list(owner.groups.values_list("name", flat=True)) == ["owner"]
    assert not AuditEvent.objects.filter(action="user.admin_change").exists()


def test_the_last_active_admin_keeps_the_admin_role(admin_user):
    """Nobody locks the organisation out of its own configuration: the admin role leaves the last active admin only
    once someone else holds it; nothing changes, no event."""
    solo = UserFactory(username="ada", roles=["admin"])
    admin_user.is_active = False  # the only other admin (a superuser) has left
    admin_user.save(update_fields=["is_active"])
    api = as_user(UserFactory(username="ops", roles=["admin"]))
    # ops is an admin too, so ada's role can go; then ops is the last one and keeps it
    assert api.post("/api/v1/people/ada/roles/", {"roles": ["owner"]}, format="json").status_code == 200
    response = api.post("/api/v1/people/ops/roles/", {"roles": ["owner"]}, format="json")
    assert response.status_code == 400 and "last active admin" in str(response.json()), response.content
    assert set(solo.groups.values_list("name", flat=True)) == {"owner"}
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="ops").groups.filter(name="admin").exists()
    assert AuditEvent.objects.filter(action="user.admin_change").count() == 1  # ada's change only
