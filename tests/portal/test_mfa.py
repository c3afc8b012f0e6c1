"""Two-factor authentication is required of approvers, security, admins and staff (portal.mfa), on every
page and API session; API tokens stay usable; TOTP secrets are encrypted; recovery codes work."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.adapter import get_adapter as get_mfa_adapter
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value, yield_hotp_counters_from_time
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from portal.crypto import hash_token
from portal.mfa import mfa_required, on_authenticator_added, session_passed_mfa
from portal.models import ApiToken
from tests.e2e.support import PASSWORD
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mfa_on(settings):
    settings.REGISTRAR_MFA_REQUIRED = True


def totp_code(secret: str, shift: int = 0) -> str:
    counter = list(yield_hotp_counters_from_time())[0] + shift
    return format_hotp_value(hotp_value(secret, counter))


def verified(user):
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def password_login(client, user):
    answer = client.post("/accounts/login/", {"login": user.username, "password": PASSWORD})
    assert answer.status_code == 302, answer.content[:400]
    return answer


def enrol_totp(client, user, on_commit) -> str:
    """A fresh password login, then TOTP activation as a person does it; returns the secret."""
    password_login(client, user)
    # allauth asks for the password again before a factor is added (MFA_REAUTHENTICATION_REQUIRED).
    answer = client.get("/accounts/2fa/totp/activate/")
    assert answer["Location"].startswith("/accounts/reauthenticate/")
    client.post(answer["Location"], {"password": PASSWORD})
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session["mfa.totp.secret"]
    assert secret in page.content.decode()  # shown for typing into an app, besides the QR code
    with on_commit(execute=True):  # allauth announces the new authenticator after commit
        answer = client.post("/accounts/2fa/totp/activate/", {"code": totp_code(secret)})
    assert answer.status_code == 302, answer.content[:600]
    return secret


# --- who must -----------------------------------------------------------------------------------------------


def test_privileged_roles_and_staff_must_owners_need_not():
    assert mfa_required(UserFactory(username="a1", roles=["approver"]))
    assert mfa_required(UserFactory(username="s1", roles=["security"]))
    assert mfa_required(UserFactory(username="d1", roles=["admin"]))
    assert mfa_required(UserFactory(username="st", is_staff=True))
    assert not mfa_required(UserFactory(username="o1", roles=["owner"]))


# --- not enrolled: nothing but the enrolment page ------------------------------------------------------------


def _all_paths() -> list[str]:
    """Every URL pattern of the site, with a placeholder for each argument."""
    paths: list[str] = []

    def walk(resolver, prefix):
        for pattern in resolver.url_patterns:
            text = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern, text)
            elif isinstance(pattern, URLPattern):
                path = re.sub(r"<[^>]+>", "1", text).replace("^", "").replace("$", "").replace("\\", "")
                path = re.sub(r"\(\?P<[^>]+>[^)]*\)", "1", path)
                paths.append("/" + path)

    walk(get_resolver(), "")
    return paths


def test_every_page_and_api_of_an_approver_without_mfa_leads_to_enrolment(client, approver):
    client.force_login(approver)
    checked = 0
    for path in _all_paths():
        if path.startswith(("/accounts/", "/static/", "/healthz", "/readyz", "/metrics", "/log/")):
            continue
        if path == "/admin/login/":  # sent to allauth's login (test_django_admin_login_goes_through_allauth)
            continue
        if path.startswith("/oauth2/register"):  # agents' endpoints: no session, no browser middleware
            continue
        answer = client.get(path)
        checked += 1
        if path.startswith("/api/"):
            assert answer.status_code == 403, path
            assert "Two-factor authentication required" in answer.json()["detail"], path
        else:
            assert answer.status_code == 302, path
            assert answer["Location"].startswith("/accounts/2fa/?next="), (path, answer["Location"])
    assert checked > 40  # the walk found the site's pages, not an empty list


def test_posts_are_refused_too_and_htmx_is_told_where_to_go(client, approver):
    client.force_login(approver)
    assert client.post("/approvals/req_x/decide/", {"kind": "approve"})["Location"].startswith("/accounts/2fa/")
    answer = client.get("/approvals/", HTTP_HX_REQUEST="true")
    assert answer.status_code == 403 and answer["HX-Redirect"].startswith("/accounts/2fa/?next=")


def test_the_enrolment_pages_stay_open(client, approver):
    verified(approver)
    password_login(client, approver)
    assert client.get("/accounts/2fa/").status_code == 200
    assert client.get("/accounts/2fa/totp/activate/")["Location"].startswith("/accounts/reauthenticate/")
    assert client.get("/accounts/reauthenticate/").status_code == 200
    assert client.get("/accounts/email/").status_code == 200


def test_owners_are_not_asked(client, owner):
    client.force_login(owner)
    assert client.get("/inventory/mine/").status_code == 200


def test_api_tokens_of_privileged_people_keep_working(approver):
    plaintext = "api_test_mfa_token"
    ApiToken.objects.create(user=approver, name="ci", prefix=plaintext[:12], token_hash=hash_token(plaintext))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    assert api.get("/api/v1/requests/").status_code == 200


def test_django_admin_login_goes_through_allauth(client, admin_user):
    answer = client.get("/admin/login/?next=/admin/inventory/")
    assert answer.status_code == 302 and answer["Location"] == "/accounts/login/?next=%2Fadmin%2Finventory%2F"
    client.force_login(admin_user)  # a session from Django admin's form would carry no second factor
    assert client.get("/admin/")["Location"].startswith("/accounts/2fa/")


# --- enrolled ---------------------------------------------------------------------------------------------


def test_enrolling_totp_stores_it_encrypted_with_recovery_codes(client, approver, django_capture_on_commit_callbacks):
    verified(approver)
    secret = enrol_totp(client, approver, django_capture_on_commit_callbacks)
    stored = Authenticator.objects.get(user=approver, type=Authenticator.Type.TOTP).data["secret"]
    assert secret not in stored and get_mfa_adapter().decrypt(stored) == secret  # encrypted at rest
    assert Authenticator.objects.filter(user=approver, type=Authenticator.Type.RECOVERY_CODES).exists()


def test_enrolling_counts_as_the_sessions_second_factor(rf, approver):
    # allauth sends "authenticator added" after commit, inside the enrolment request (the browser test
    # tests/e2e/test_mfa_browser.py goes from enrolment straight to the queue); here the receiver alone.
    from django.contrib.sessions.backends.db import SessionStore

    request = rf.get("/")
    request.session, request.user = SessionStore(), approver
    assert not session_passed_mfa(request)
    totp = Authenticator.objects.create(user=approver, type=Authenticator.Type.TOTP, data={"secret": "x"})
    codes = Authenticator.objects.create(user=approver, type=Authenticator.Type.RECOVERY_CODES, data={})
    on_authenticator_added(None, request=request, user=approver, authenticator=codes)
    assert not session_passed_mfa(request)  # recovery codes alone are no factor
    on_authenticator_added(None, request=request, user=approver, authenticator=totp)
    assert session_passed_mfa(request)


def test_enrolment_needs_a_verified_email_address(client, approver):
    password_login(client, approver)
    answer = client.get("/accounts/2fa/totp/activate/")
    assert answer.status_code == 302 or "verify" in answer.content.decode().lower()
    assert not Authenticator.objects.filter(user=approver).exists()


def test_next_login_asks_for_the_code_and_a_wrong_code_gets_nowhere(
    client, approver, django_capture_on_commit_callbacks
):
    verified(approver)
    secret = enrol_totp(client, approver, django_capture_on_commit_callbacks)
    client.logout()

    assert password_login(client, approver)["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/approvals/")["Location"].startswith("/accounts/login/")  # not signed in yet
    client.post("/accounts/2fa/authenticate/", {"code": "000000" if totp_code(secret) != "000000" else "111111"})
    assert client.get("/approvals/")["Location"].startswith("/accounts/login/")
    answer = client.post("/accounts/2fa/authenticate/", {"code": totp_code(secret)})
    assert answer.status_code == 302
    assert client.get("/approvals/").status_code == 200


def test_a_recovery_code_stands_in_for_the_app(client, approver, django_capture_on_commit_callbacks):
    verified(approver)
    enrol_totp(client, approver, django_capture_on_commit_callbacks)
    codes = Authenticator.objects.get(user=approver, type=Authenticator.Type.RECOVERY_CODES).wrap().get_unused_codes()
    assert len(codes) == 10
    client.logout()
    password_login(client, approver)
    client.post("/accounts/2fa/authenticate/", {"code": codes[0]})
    assert client.get("/approvals/").status_code == 200
    rc = Authenticator.objects.get(user=approver, type=Authenticator.Type.RECOVERY_CODES).wrap()
    assert codes[0] not in rc.get_unused_codes()  # used once


def test_an_enrolled_session_without_the_second_factor_must_confirm_it(
    client, approver, django_capture_on_commit_callbacks
):
    verified(approver)
    secret = enrol_totp(client, approver, django_capture_on_commit_callbacks)
    client.logout()
    client.force_login(approver)  # e.g. a session from before the role was granted
    answer = client.get("/approvals/")
    assert answer["Location"].startswith("/accounts/2fa/reauthenticate/?next=")
    assert client.get("/api/v1/requests/").status_code == 403
    client.post("/accounts/2fa/reauthenticate/", {"code": totp_code(secret, shift=1)})
    assert client.get("/approvals/").status_code in (200, 302)


def test_the_last_factor_of_a_privileged_person_cannot_be_removed(approver, owner):
    totp = Authenticator.objects.create(user=approver, type=Authenticator.Type.TOTP, data={"secret": "x"})
    assert not get_mfa_adapter().can_delete_authenticator(totp)
    key = Authenticator.objects.create(user=approver, type=Authenticator.Type.WEBAUTHN, data={})
    assert get_mfa_adapter().can_delete_authenticator(totp)  # the security key remains
    key.delete()
    owners = Authenticator.objects.create(user=owner, type=Authenticator.Type.TOTP, data={"secret": "x"})
    assert get_mfa_adapter().can_delete_authenticator(owners)
