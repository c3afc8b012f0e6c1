"""Roles and capabilities: one module decides, tested for every role."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client as HttpClient

from inventory.permissions import can_manage_client
from portal.roles import (
    Role,
    can_approve,
    can_break_glass,
    can_see_all_clients,
    roles_of,
)
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db

EXPECTED = {
    # role: (approve, see all clients, break glass)
    "approver": (True, False, False),
    "owner": (False, False, False),
    "security": (False, True, True),
    "admin": (False, True, True),
}


@pytest.mark.parametrize("role", list(EXPECTED))
def test_capabilities_per_role(role):
    user = UserFactory(roles=[role])
    assert roles_of(user) == {role}
    assert (can_approve(user), can_see_all_clients(user), can_break_glass(user)) == EXPECTED[role]


def test_service_accounts_never_approve_and_inactive_users_have_no_roles():
    bot = UserFactory(roles=["approver"], is_service_account=True)
    assert not can_approve(bot)
    gone = UserFactory(roles=["approver"], is_active=False)
    assert roles_of(gone) == frozenset()


def test_superuser_counts_as_admin():
    assert Role.ADMIN in roles_of(UserFactory(is_superuser=True))


def test_owner_manages_only_own_clients_admin_manages_all():
    alice, mallory = UserFactory(roles=["owner"]), UserFactory(roles=["owner"])
    client = ClientFactory(owner=alice)
    assert can_manage_client(alice, client)
    assert not can_manage_client(mallory, client)
    assert can_manage_client(UserFactory(roles=["admin"]), client)
    assert not can_manage_client(UserFactory(roles=["security"]), client)


@pytest.mark.parametrize(
    "role,tiles",
    [
        ("approver", ["Waiting for your decision"]),
        ("owner", ["My live clients"]),
        ("security", ["Live clients"]),
    ],
)
def test_home_page_is_role_appropriate(role, tiles, django_assert_max_num_queries):
    user = UserFactory(roles=[role])
    browser = HttpClient()
    browser.force_login(user)
    with django_assert_max_num_queries(12):
        response = browser.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    for tile in tiles:
        assert tile in body


def test_anonymous_home_redirects_to_login_and_login_page_renders():
    browser = HttpClient()
    response = browser.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    page = browser.get("/accounts/login/")
    assert page.status_code == 200 and b'name="login"' in page.content and b"csrfmiddlewaretoken" in page.content


def test_password_login_with_username_and_email():
    UserFactory(username="zoe", email="zoe@example.com", roles=["owner"])
    for login in ("zoe", "zoe@example.com"):
        browser = HttpClient()
        response = browser.post("/accounts/login/", {"login": login, "password": "pw-for-tests-1"})
        assert response.status_code == 302, login
        assert browser.get("/").status_code == 200


def test_api_token_authenticates_the_management_api():
    user = UserFactory(username="automation", roles=["security"])
    out = StringIO()
    call_command("create_api_token", "--user", "automation", "--name", "siem export", stdout=out)
    token = out.getvalue().strip()
    browser = HttpClient()
    assert browser.get("/api/schema/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert browser.get("/api/schema/", HTTP_AUTHORIZATION="Token wrong").status_code in (401, 403)
    assert user.api_tokens.get().token_hash != token
