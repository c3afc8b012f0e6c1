"""End to end in a real browser: an approver is sent to set up two-factor authentication, enrols a TOTP app
(codes computed with allauth's own TOTP helper), reaches the queue, signs in again with a code and with a
recovery code, and adds a security key (WebAuthn, Chromium's virtual authenticator). Owners are never asked.
Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import time

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value, yield_hotp_counters_from_time

from portal.models import User
from tests.e2e.support import PASSWORD, SHOTS
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _mfa_on(settings):
    settings.REGISTRAR_MFA_REQUIRED = True


def totp_code(secret: str, shift: int = 0) -> str:
    return format_hotp_value(hotp_value(secret, list(yield_hotp_counters_from_time())[0] + shift))


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


@pytest.fixture
def bob(transactional_db, role_groups):
    user = UserFactory(username="bob", roles=["approver"])
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def test_an_approver_enrols_totp_then_signs_in_with_a_code_and_a_recovery_code(live_server, browser, bob):
    base = live_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, base, "bob")
    assert page.url.startswith(f"{base}/accounts/2fa/")  # nothing else until a second factor is set up
    assert "requires two-factor authentication" in page.content()
    page.screenshot(path=str(SHOTS / "mfa-required.png"), full_page=True)
    page.goto(f"{base}/approvals/")
    assert page.url.startswith(f"{base}/accounts/2fa/?next=")

    page.goto(f"{base}/accounts/2fa/totp/activate/")
    if "/accounts/reauthenticate/" in page.url:  # allauth confirms the password before adding a factor
        page.screenshot(path=str(SHOTS / "mfa-reauthenticate.png"), full_page=True)
        page.fill("input[name=password]", PASSWORD)
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_url(f"{base}/accounts/2fa/totp/activate/")
    secret = page.input_value("#authenticator_secret")
    page.screenshot(path=str(SHOTS / "mfa-totp-activate.png"), full_page=True)
    activation_code = totp_code(secret)
    page.fill("input[name=code]", activation_code)
    page.get_by_role("button", name="Activate").click()
    page.wait_for_load_state("networkidle")
    assert Authenticator.objects.filter(user=bob, type=Authenticator.Type.TOTP).exists()

    page.goto(f"{base}/approvals/")  # enrolling counts as this session's second factor
    assert page.url == f"{base}/approvals/"
    page.goto(f"{base}/accounts/2fa/recovery-codes/")
    page.screenshot(path=str(SHOTS / "mfa-recovery-codes.png"), full_page=True)
    codes = Authenticator.objects.get(user=bob, type=Authenticator.Type.RECOVERY_CODES).wrap().get_unused_codes()
    assert codes[0] in page.content()
    context.close()

    # allauth refuses a TOTP code used before: sign in with the next time step's code, not the activation's.
    deadline = time.monotonic() + 35
    while totp_code(secret) == activation_code and time.monotonic() < deadline:
        time.sleep(0.5)
    for second_factor in (totp_code(secret), codes[0]):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sign_in(page, base, "bob")
        assert page.url == f"{base}/accounts/2fa/authenticate/"
        page.fill("input[name=code]", second_factor)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{base}/approvals/")
        assert page.url == f"{base}/approvals/", second_factor
        context.close()
    rc = Authenticator.objects.get(user=bob, type=Authenticator.Type.RECOVERY_CODES).wrap()
    assert codes[0] not in rc.get_unused_codes()


def test_an_approver_adds_a_security_key(live_server, browser, bob):
    base = live_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    sign_in(page, base, "bob")
    page.goto(f"{base}/accounts/2fa/webauthn/add/")
    if "/accounts/reauthenticate/" in page.url:
        page.fill("input[name=password]", PASSWORD)
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_url(f"{base}/accounts/2fa/webauthn/add/")
    page.fill("input[name=name]", "desk key")
    page.click("#mfa_webauthn_add")
    page.wait_for_url(lambda url: "/webauthn/add/" not in url, timeout=15000)
    page.screenshot(path=str(SHOTS / "mfa-webauthn-added.png"), full_page=True)
    key = Authenticator.objects.get(user=bob, type=Authenticator.Type.WEBAUTHN)
    assert key.wrap().name == "desk key"
    page.goto(f"{base}/approvals/")
    assert page.url == f"{base}/approvals/"
    context.close()


def test_owners_are_never_asked(live_server, browser, transactional_db, role_groups):
    UserFactory(username="olivia", roles=["owner"])
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_server.url, "olivia")
    assert page.url == f"{live_server.url}/"
    assert not Authenticator.objects.filter(user=User.objects.get(username="olivia")).exists()
    context.close()
