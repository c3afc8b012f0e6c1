"""Invariant: the company directory (SCIM) acts on ordinary people only.

Matrix: each privileged kind of account × each SCIM verb that writes is refused with an RFC 7644 error and
changes nothing (no row, no audit event); an ordinary person (an owner) goes through, so the matrix can
fail both ways. Nothing SCIM sends can grant a role, is_staff, is_superuser or a password.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings

from inventory import directory
from portal.audit import Actor
from portal.models import AuditEvent, User
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
TOKEN = "scim-invariant-token-0123456789"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

PRIVILEGED = {
    "staff": {"is_staff": True},
    "superuser": {"is_superuser": True},
    "approver": {"roles": ["approver"]},
    "security": {"roles": ["security"]},
    "admin": {"roles": ["admin"]},
    "inactive admin": {"roles": ["admin"], "is_active": False},  # switching them back on is the risk
}


@pytest.fixture(autouse=True)
def scim_enabled():
    with override_settings(REGISTRAR_SCIM_TOKEN=TOKEN), mock.patch("portal.celery.app.send_task"):
        yield


def scim(client, method: str, url: str, body: dict | None = None):
    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/scim+json")
    return getattr(client, method)(url, **kwargs)


def make(kind: str) -> User:
    options = dict(PRIVILEGED.get(kind, {"roles": ["owner"]}))
    return UserFactory(username=f"target-{kind.replace(' ', '-')}", external_id=f"ext-{kind}", **options)


def state(user: User) -> tuple:
    user = User.objects.get(pk=user.pk)
    return (
        user.username,
        user.email,
        user.external_id,
        user.first_name,
        user.is_active,
        user.is_staff,
        user.is_superuser,
        user.password,
        sorted(user.groups.values_list("name", flat=True)),
    )


def _patch(ops: list[dict]) -> dict:
    return {"schemas": [PATCH], "Operations": ops}


# verb → (method, url for the target, body)
VERBS = {
    "PUT": lambda u: (
        "put",
        f"/scim/v2/Users/{u.pk}",
        {
            "userName": u.username,
            "name": {"givenName": "Mallory"},
            "emails": [{"value": "m@evil.example"}],
            "active": True,
        },
    ),
    "PATCH e-mail": lambda u: (
        "patch",
        f"/scim/v2/Users/{u.pk}",
        _patch([{"op": "replace", "path": "emails", "value": [{"value": "m@evil.example", "primary": True}]}]),
    ),
    "PATCH active=false": lambda u: (
        "patch",
        f"/scim/v2/Users/{u.pk}",
        _patch([{"op": "replace", "path": "active", "value": False}]),
    ),
    "PATCH active=true": lambda u: (
        "patch",
        f"/scim/v2/Users/{u.pk}",
        _patch([{"op": "replace", "value": {"active": "True"}}]),
    ),
    "PATCH userName": lambda u: (
        "patch",
        f"/scim/v2/Users/{u.pk}",
        _patch([{"op": "replace", "path": "userName", "value": "renamed"}]),
    ),
    "DELETE": lambda u: ("delete", f"/scim/v2/Users/{u.pk}", None),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", PRIVILEGED)
def test_privileged_accounts_are_refused_every_write(client, kind, verb):
    target = make(kind)
    before = state(target)
    method, url, body = VERBS[verb](target)
    response = scim(client, method, url, body)
    assert response.status_code == 403, (kind, verb, response.content)
    error = response.json()
    assert error["schemas"] == [ERROR] and error["status"] == "403"
    assert "privileged account" in error["detail"] and "admin" in error["detail"]
    assert state(target) == before
    assert not AuditEvent.objects.exists()


CREATES = {
    "same userName": lambda u: {"userName": u.username.upper()},
    "same externalId": lambda u: {"userName": "newcomer", "externalId": u.external_id},
    "same e-mail": lambda u: {"userName": "newcomer", "emails": [{"value": u.email.upper(), "primary": True}]},
}


@pytest.mark.parametrize("collision", CREATES)
@pytest.mark.parametrize("kind", PRIVILEGED)
def test_creating_someone_onto_a_privileged_identity_is_refused(client, kind, collision):
    target = make(kind)
    response = scim(client, "post", "/scim/v2/Users", CREATES[collision](target))
    assert response.status_code == 409, (kind, collision, response.content)
    assert response.json()["scimType"] == "uniqueness" and "privileged account" in response.json()["detail"]
    assert User.objects.count() == 1 and not AuditEvent.objects.exists()


@pytest.mark.parametrize("kind", PRIVILEGED)
def test_renaming_an_ordinary_person_onto_a_privileged_identity_is_refused(client, kind):
    target = make(kind)
    ordinary = make("owner")
    before = state(ordinary)
    for op in (
        {"op": "replace", "path": "emails", "value": [{"value": target.email}]},
        {"op": "replace", "path": "externalId", "value": target.external_id},
    ):
        response = scim(client, "patch", f"/scim/v2/Users/{ordinary.pk}", _patch([op]))
        assert response.status_code == 409 and "privileged account" in response.json()["detail"], op
    assert state(ordinary) == before and not AuditEvent.objects.exists()


@pytest.mark.parametrize("kind", PRIVILEGED)
def test_reading_privileged_accounts_stays_allowed_and_shows_no_roles(client, kind):
    target = make(kind)
    one = scim(client, "get", f"/scim/v2/Users/{target.pk}")
    assert one.status_code == 200 and one.json()["userName"] == target.username
    assert not {"roles", "groups", "entitlements", "password"} & set(one.json())
    found = scim(client, "get", f'/scim/v2/Users?filter=userName eq "{target.username}"').json()
    assert found["totalResults"] == 1


@pytest.mark.parametrize("verb", VERBS)
def test_ordinary_people_go_through(client, verb):
    """The control row: the same calls on an owner are accepted."""
    target = make("owner")
    if verb == "PATCH active=true":
        target.is_active = False
        target.save()
    method, url, body = VERBS[verb](target)
    assert scim(client, method, url, body).status_code in (200, 204), verb
    assert AuditEvent.objects.filter(object_type="user", object_id=str(target.pk), actor_label="scim").exists()


@pytest.mark.parametrize(
    "body",
    [
        {"password": "Secret-123456"},
        {"roles": [{"value": "admin"}]},
        {"entitlements": [{"value": "registrar-admin"}]},
    ],
)
def test_scim_never_sets_a_password_or_a_role(client, body):
    target = make("owner")
    before = state(target)
    put = scim(client, "put", f"/scim/v2/Users/{target.pk}", {"userName": target.username, **body})
    assert put.status_code == 400 and put.json()["scimType"] == "mutability"
    patch = scim(client, "patch", f"/scim/v2/Users/{target.pk}", _patch([{"op": "replace", "value": body}]))
    assert patch.status_code == 400
    create = scim(client, "post", "/scim/v2/Users", {"userName": "newcomer", **body})
    assert create.status_code == 400
    assert state(target) == before and not User.objects.filter(username="newcomer").exists()
    assert not AuditEvent.objects.exists()


def test_group_membership_and_flags_in_a_body_are_ignored(client):
    """``groups`` is read-only in RFC 7643, and is_staff/is_superuser are not SCIM attributes at all."""
    target = make("owner")
    body = {
        "userName": target.username,
        "groups": [{"value": str(Group.objects.get(name="admin").pk)}],
        "is_staff": True,
        "is_superuser": True,
        "isAdmin": True,
        "userType": "admin",
    }
    assert scim(client, "put", f"/scim/v2/Users/{target.pk}", body).status_code == 200
    created = scim(client, "post", "/scim/v2/Users", {**body, "userName": "newcomer"})
    assert created.status_code == 201
    for user in User.objects.filter(username__in=[target.username, "newcomer"]):
        assert not (user.is_staff or user.is_superuser) and list(user.groups.values_list("name", flat=True)) in (
            [],
            ["owner"],
        )
    assert not User.objects.get(username="newcomer").has_usable_password()


@pytest.mark.parametrize("attribute", ["is_staff", "is_superuser", "password", "groups", "is_active"])
def test_the_directory_service_takes_directory_attributes_only(attribute):
    target = make("owner")
    with pytest.raises(directory.InvalidAttributes, match=attribute):
        directory.directory_user_update(actor=Actor.system("scim"), user=target, attributes={attribute: True})
    with pytest.raises(directory.InvalidAttributes, match=attribute):
        directory.directory_user_create(actor=Actor.system("scim"), attributes={"username": "x", attribute: True})
    assert not AuditEvent.objects.exists()
