"""End to end in a real browser: an admin sets an IdP connection's credentials in Django admin (never shown
back) and tests the connection against the real test IdP. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import pytest

from inventory.choices import IdPKind
from inventory.models import IdPConnection
from tests.e2e.support import SHOTS, login
from tests.factories import IdPFactory, UserFactory

pytestmark = pytest.mark.e2e


def test_an_admin_sets_credentials_and_tests_the_connection(
    live_server, browser, transactional_db, role_groups, oidc_idp
):
    UserFactory(username="root", roles=["admin"], is_staff=True, is_superuser=True)
    config, secrets = oidc_idp.connector_config()
    idp = IdPFactory(name="company-idp", kind=IdPKind.RFC7591, config=config)
    context, page = login(browser, live_server.url, "root")

    page.goto(f"{live_server.url}/admin/inventory/idpconnection/{idp.pk}/change/")
    page.click("#idp-set-credentials")
    page.fill("input[name=initial_access_token]", secrets["initial_access_token"])
    page.fill("input[name=admin_token]", secrets["admin_token"])
    page.screenshot(path=str(SHOTS / "idp-secrets-form.png"), full_page=True)
    page.click("input[name=_save]")
    page.wait_for_url(f"{live_server.url}/admin/inventory/idpconnection/{idp.pk}/change/")
    assert "credentials saved (admin_token, initial_access_token)" in page.content()
    assert IdPConnection.objects.get(pk=idp.pk).secrets == secrets

    page.click("#idp-set-credentials")
    assert page.input_value("input[name=initial_access_token]") == ""  # write-only: never filled back in
    assert secrets["initial_access_token"] not in page.content()
    page.go_back()

    page.click("#idp-test-connection")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SHOTS / "idp-test-connection.png"), full_page=True)
    text = page.content()
    assert "connection works" in text and "initial_access_token: accepted" in text
    assert secrets["initial_access_token"] not in text and secrets["admin_token"] not in text
    context.close()
