"""SCIM /scim/v2/Users and the other leaver signals (admin action, SSO disabled)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.contrib.admin.sites import site
from django.test import override_settings

from inventory.choices import ClientState
from inventory.leavers import on_social_login, sso_account_disabled, user_deactivate
from inventory.models import Client
from inventory.sweeps import sweep_orphans
from portal.audit import Actor
from portal.models import AuditEvent, User
from tests.factories import ClientFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scim_token")]
TOKEN = "scim-test-token-0123456789"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def scim_token():
    with override_settings(REGISTRAR_SCIM_TOKEN=TOKEN):
        yield


@pytest.fixture
def sent_tasks():
    with mock.patch("portal.celery.app.send_task") as send:
        yield send


def call(client, method, url, body=None, auth=True):
    kwargs = dict(AUTH) if auth else {}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/scim+json")
    return getattr(client, method)(url, **kwargs)


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Token {TOKEN}"])
def test_every_call_needs_the_bearer_token(client, method, header):
    user = UserFactory(username="leaver")
    url = "/scim/v2/Users" if method in ("get", "post") else f"/scim/v2/Users/{user.pk}"
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    if method in ("post", "put", "patch"):
        kwargs.update(data=json.dumps({"userName": "x", "active": False}), content_type="application/json")
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == 401
    assert response.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert User.objects.get(pk=user.pk).is_active and AuditEvent.objects.count() == 0


def test_no_token_configured_refuses_everything(client):
    with override_settings(REGISTRAR_SCIM_TOKEN=None):
        assert call(client, "get", "/scim/v2/Users").status_code == 401


def test_list_filter_and_get(client):
    UserFactory(username="alice", external_id="ext-a")
    UserFactory(username="bob")
    listing = call(client, "get", "/scim/v2/Users").json()
    assert listing["totalResults"] == 2 and {r["userName"] for r in listing["Resources"]} == {"alice", "bob"}
    found = call(client, "get", '/scim/v2/Users?filter=userName eq "alice"').json()
    assert found["totalResults"] == 1 and found["Resources"][0]["externalId"] == "ext-a"
    by_ext = call(client, "get", '/scim/v2/Users?filter=externalId eq "ext-a"').json()
    assert by_ext["Resources"][0]["userName"] == "alice"
    assert call(client, "get", '/scim/v2/Users?filter=name co "x"').status_code == 400
    one = call(client, "get", f"/scim/v2/Users/{found['Resources'][0]['id']}")
    assert one.status_code == 200 and one["Content-Type"] == "application/scim+json" and one.json()["active"] is True
    assert call(client, "get", "/scim/v2/Users/999999").status_code == 404


def test_create_then_duplicate_is_409(client):
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "newbie",
        "externalId": "e-1",
        "name": {"givenName": "New", "familyName": "Bie"},
        "emails": [{"value": "n@example.com", "primary": True}],
    }
    response = call(client, "post", "/scim/v2/Users", body)
    assert response.status_code == 201
    user = User.objects.get(username="newbie")
    assert (user.external_id, user.email, user.first_name, user.has_usable_password()) == (
        "e-1",
        "n@example.com",
        "New",
        False,
    )
    assert call(client, "post", "/scim/v2/Users", body).status_code == 409
    assert call(client, "post", "/scim/v2/Users", {"userName": ""}).status_code == 400
    assert User.objects.filter(username="newbie").count() == 1


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "replace", "path": "active", "value": False},
        {"op": "Replace", "value": {"active": "False"}},  # Entra ID sends strings and capitalised ops
    ],
)
def test_patch_active_false_deactivates_and_enqueues_the_orphan_sweep(
    client, django_capture_on_commit_callbacks, sent_tasks, patch
):
    user = UserFactory(username="leaver")
    with django_capture_on_commit_callbacks(execute=True):
        response = call(
            client, "patch", f"/scim/v2/Users/{user.pk}", {"schemas": [PATCH_SCHEMA], "Operations": [patch]}
        )
    assert response.status_code == 200 and response.json()["active"] is False
    user.refresh_from_db()
    assert (user.is_active, user.deactivation_source) == (False, "scim") and user.deactivated_at is not None
    sent_tasks.assert_called_once_with("inventory.tasks.sweep_orphans")
    assert AuditEvent.objects.get().action == "user.deactivate"


def test_bad_patches_change_nothing(client):
    user = UserFactory(username="stay")
    url = f"/scim/v2/Users/{user.pk}"
    for body in (
        {"Operations": [{"op": "replace", "path": "active", "value": False}]},  # no PatchOp schema
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "remove", "path": "active"}]},
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": "maybe"}]},
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "groups", "value": []}]},
    ):
        assert call(client, "patch", url, body).status_code == 400
    assert client.patch(url, data="{not json", content_type="application/scim+json", **AUTH).status_code == 400
    assert User.objects.get(pk=user.pk).is_active and AuditEvent.objects.count() == 0


def test_json_that_cannot_be_stored_is_400_not_500(client):
    """A half surrogate pair (\\ud800) or NaN parses in Python but no column stores it: refused at the door."""
    user = UserFactory(username="keep", first_name="Keep")
    url = f"/scim/v2/Users/{user.pk}"
    bodies = (
        '{"userName": "keep", "name": {"givenName": "x \\ud800"}, "active": true}',
        '{"userName": "keep", "name": {"givenName": "x"}, "active": NaN}',
    )
    for raw in bodies:
        response = client.put(url, data=raw, content_type="application/scim+json", **AUTH)
        assert response.status_code == 400, response.content
        assert response.json()["scimType"] == "invalidSyntax" and "not valid JSON" in response.json()["detail"]
    created = client.post(
        "/scim/v2/Users", data=bodies[0].replace("keep", "new"), content_type="application/scim+json", **AUTH
    )
    assert created.status_code == 400
    assert User.objects.get(pk=user.pk).first_name == "Keep" and not User.objects.filter(username="new").exists()
    assert AuditEvent.objects.count() == 0


def test_put_replaces_and_can_deactivate_and_reactivate(client, sent_tasks):
    user = UserFactory(username="putme")
    url = f"/scim/v2/Users/{user.pk}"
    body = {"userName": "putme", "name": {"givenName": "Put"}, "emails": [{"value": "p@example.com"}], "active": False}
    response = call(client, "put", url, body)
    assert response.status_code == 200 and response.json()["active"] is False
    user.refresh_from_db()
    assert (user.first_name, user.email, user.is_active, user.deactivation_source) == (
        "Put",
        "p@example.com",
        False,
        "scim",
    )
    call(client, "put", url, body | {"active": True})
    user.refresh_from_db()
    assert user.is_active and user.deactivated_at is None
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["user.update", "user.deactivate", "user.reactivate"]
    assert (events[0].actor_label, events[0].before, events[0].after) == (
        "scim",
        {"first_name": "", "email": "putme@example.com"},
        {"first_name": "Put", "email": "p@example.com"},
    )


def test_delete_deactivates_and_the_next_orphan_sweep_acts(client, sent_tasks):
    user = UserFactory(username="gone")
    owned = ClientFactory(owner=user)
    assert call(client, "delete", f"/scim/v2/Users/{user.pk}").status_code == 204
    assert not User.objects.get(pk=user.pk).is_active
    assert call(client, "delete", f"/scim/v2/Users/{user.pk}").status_code == 204  # idempotent
    assert AuditEvent.objects.filter(action="user.deactivate").count() == 1
    assert sweep_orphans().counts == {"orphaned": 1}
    assert Client.objects.get(pk=owned.pk).orphaned_at is not None
    assert Client.objects.get(pk=owned.pk).state == ClientState.ACTIVE  # suspended only after the grace period


def test_admin_action_deactivates_through_the_service(rf, admin_user, sent_tasks):
    from django.contrib.messages.storage.fallback import FallbackStorage

    from inventory.admin import deactivate_users

    assert deactivate_users in site._registry[User].actions
    leaver = UserFactory(username="adm-leaver")
    request = rf.post("/admin/portal/user/")
    request.user = admin_user
    request.session = {}
    request._messages = FallbackStorage(request)
    deactivate_users(site._registry[User], request, User.objects.filter(pk=leaver.pk))
    leaver.refresh_from_db()
    assert (leaver.is_active, leaver.deactivation_source) == (False, "admin")
    event = AuditEvent.objects.get()
    assert (event.action, event.actor_label) == ("user.deactivate", admin_user.username)


@pytest.mark.parametrize(
    "extra,disabled",
    [
        ({"enabled": False}, True),
        ({"userinfo": {"accountEnabled": False}}, True),
        ({"active": "false"}, True),
        ({"enabled": True, "email": "x"}, False),
        ({}, False),
    ],
)
def test_sso_disabled_claims(extra, disabled):
    assert sso_account_disabled(extra) is disabled


def test_sso_signal_deactivates_a_disabled_account(sent_tasks):
    user = UserFactory(username="sso-leaver")
    login = mock.Mock()
    login.account.user = user
    login.account.provider = "oidc"
    login.account.extra_data = {"enabled": False}
    on_social_login(sender=None, request=None, sociallogin=login)
    user.refresh_from_db()
    assert (user.is_active, user.deactivation_source) == (False, "sso")
    login.account.extra_data = {"enabled": True}
    other = UserFactory(username="sso-stays")
    login.account.user = other
    on_social_login(sender=None, request=None, sociallogin=login)
    assert User.objects.get(pk=other.pk).is_active


def test_scim_cannot_take_over_or_switch_off_an_admin(client, admin_user, sent_tasks):
    """Regression: with REGISTRAR_SCIM_TOKEN set, SCIM could PATCH the superuser's e-mail (→ password reset
    → admin) and deactivate admins."""
    url = f"/scim/v2/Users/{admin_user.pk}"
    takeover = call(
        client,
        "patch",
        url,
        {
            "schemas": [PATCH_SCHEMA],
            "Operations": [
                {"op": "replace", "path": "emails", "value": [{"value": "attacker@evil.example", "primary": True}]}
            ],
        },
    )
    assert takeover.status_code == 403, takeover.content
    assert takeover.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert takeover.json()["status"] == "403" and "privileged account" in takeover.json()["detail"]
    assert call(client, "delete", url).status_code == 403
    assert (
        call(
            client,
            "patch",
            url,
            {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]},
        ).status_code
        == 403
    )
    admin_user.refresh_from_db()
    assert (admin_user.email, admin_user.is_active) == ("root-admin@example.com", True)
    assert AuditEvent.objects.count() == 0
    sent_tasks.assert_not_called()


def test_user_deactivate_is_idempotent(sent_tasks):
    user = UserFactory()
    assert user_deactivate(user=user, actor=Actor.system("t"), source="admin") is True
    assert user_deactivate(user=user, actor=Actor.system("t"), source="scim") is False
    assert User.objects.get(pk=user.pk).deactivation_source == "admin"
