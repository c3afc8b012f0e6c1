"""End to end in a real browser against the real test IdP (tests/idp, oidc-provider) as the company's IdP:
SSO login, first-login linking by verified e-mail, roles from the groups claim, unknown or unverified people
refused, and a person disabled at the IdP deactivated as a leaver. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import shutil

import pytest
from allauth.socialaccount.models import SocialAccount

from portal.models import AuditEvent, User
from portal.roles import roles_of
from tests.e2e.support import SHOTS
from tests.factories import UserFactory
from tests.idp_server import IdPProcess

pytestmark = pytest.mark.e2e

CLIENT_ID, CLIENT_SECRET = "registrar-sso", "sso-client-secret-for-tests-7d1e"
IDP_PASSWORD = "idp-password-1"
PEOPLE = [
    {
        "sub": "u-erin",
        "username": "erin",
        "email": "erin@example.com",
        "name": "Erin Example",
        "groups": ["registrar-approvers", "staff"],
    },
    {"sub": "u-frank", "username": "frank", "email": "frank@example.com", "groups": []},
    {"sub": "u-gail", "username": "gail", "email": "gail@example.com", "email_verified": False, "groups": []},
    {"sub": "u-stranger", "username": "stranger", "email": "stranger@example.com", "groups": []},
]


@pytest.fixture(scope="module")
def company_idp(live_server):
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the SSO tests need the real test IdP")
    users = [{**person, "password": IDP_PASSWORD} for person in PEOPLE]
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [f"{live_server.url}/accounts/oidc/sso/login/callback/"],
        }
    ]
    with IdPProcess(sso_clients=clients, users=users) as process:
        yield process


@pytest.fixture
def sso(settings, company_idp, role_groups):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "sso",
                    "name": "Company SSO",
                    "client_id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "settings": {
                        "server_url": company_idp.issuer,
                        "scope": ["openid", "profile", "email", "groups"],
                        "oauth_pkce_enabled": True,
                    },
                }
            ]
        }
    }
    directives = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {**directives, "form-action": ["'self'", company_idp.issuer]}}
    settings.REGISTRAR_SSO_GROUP_ROLES = {"registrar-approvers": ["approver"], "registrar-security": ["security"]}
    return company_idp


def sso_login(browser, base, username, shot=None):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/accounts/login/")
    page.click("text=Sign in with Company SSO")
    page.wait_for_selector("#username")  # at the IdP now
    page.fill("#username", username)
    page.fill("#password", IDP_PASSWORD)
    if shot:
        page.screenshot(path=str(SHOTS / f"{shot}-idp.png"))
    page.click("#sign-in")
    page.wait_for_load_state("networkidle")
    if shot:
        page.screenshot(path=str(SHOTS / f"{shot}-back.png"), full_page=True)
    return context, page


def test_first_sso_login_links_by_verified_email_and_takes_roles_from_groups(live_server, browser, sso):
    erin = UserFactory(username="erin.local", email="erin@example.com", roles=["owner"])
    context, page = sso_login(browser, live_server.url, "erin", shot="sso-erin")
    assert page.url == f"{live_server.url}/"
    assert "erin.local" in page.content()

    account = SocialAccount.objects.get(user=erin)
    assert (account.provider, account.uid) == ("sso", "u-erin")
    erin = User.objects.get(pk=erin.pk)
    assert roles_of(erin) == {"owner", "approver"}  # owner was set by hand and the mapping does not name it
    event = AuditEvent.objects.get(action="user.roles_sync")
    assert (event.actor_label, event.before, event.after) == (
        "sso:sso",
        {"roles": ["owner"]},
        {"roles": ["approver", "owner"]},
    )
    page.goto(f"{live_server.url}/approvals/")
    assert page.locator("h1").first.inner_text().strip() != ""
    context.close()

    # Out of the approvers' group at the IdP: the next login takes the role away; the link is by subject now.
    sso.user_update("u-erin", groups=["staff"])
    context, page = sso_login(browser, live_server.url, "erin")
    assert page.url == f"{live_server.url}/"
    assert roles_of(User.objects.get(pk=erin.pk)) == {"owner"}
    assert SocialAccount.objects.filter(user=erin).count() == 1
    context.close()


def test_people_registrar_does_not_know_or_with_unverified_email_are_refused(live_server, browser, sso):
    UserFactory(username="gail", email="gail@example.com")
    for username in ("stranger", "gail"):
        context, page = sso_login(browser, live_server.url, username, shot=f"sso-refused-{username}")
        assert page.url != f"{live_server.url}/"
        assert "sign up closed" in page.content().lower()
        context.close()
    assert not SocialAccount.objects.exists()
    assert not User.objects.filter(username="stranger").exists()


def test_a_person_disabled_at_the_idp_is_deactivated_as_a_leaver(live_server, browser, sso):
    frank = UserFactory(username="frank", email="frank@example.com", roles=["owner"])
    context, page = sso_login(browser, live_server.url, "frank")
    assert page.url == f"{live_server.url}/"
    context.close()

    sso.user_update("u-frank", active=False)
    context, page = sso_login(browser, live_server.url, "frank", shot="sso-disabled")
    assert page.url != f"{live_server.url}/"
    assert "inactive" in page.content().lower()
    frank = User.objects.get(pk=frank.pk)
    assert not frank.is_active and frank.deactivation_source == "sso"
    event = AuditEvent.objects.get(action="user.deactivate")
    assert event.actor_label == "sso:sso" and event.object_id == str(frank.pk)
    context.close()
