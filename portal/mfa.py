"""Two-factor authentication is required of privileged people: approvers, security, admins, staff, superusers.

allauth's MFA does the factors themselves (TOTP apps, WebAuthn security keys and passkeys, recovery codes) and
asks for one at every login of an enrolled account, password or SSO. What allauth leaves optional, this
module makes a rule (``REGISTRAR_MFA_REQUIRED``, on by default), enforced by :class:`MfaRequiredMiddleware` on
every request a privileged person makes with a browser session — every page, every htmx fragment, every
``/api/`` call and Django admin:

* **not enrolled** → pages redirect to the two-factor page (``/accounts/2fa/``) until a TOTP app or a security
  key is set up; ``/api/`` answers ``403`` with the reason;
* **enrolled, but this session never passed a second factor** (a session from before enrolment or before a
  role was granted, a Django admin login) → the second factor is asked for again (allauth's MFA
  re-authentication); ``/api/`` answers ``403``.

API tokens (``Authorization: Token …``) carry no session and are not affected: automation keeps working, and
a token is minted by someone who passed MFA. ``/accounts/`` (login, logout, enrolment, e-mail) stays open, so a
person can always reach the enrolment page. A privileged person cannot remove their last authenticator.
TOTP secrets are stored encrypted with ``REGISTRAR_ENCRYPTION_KEY`` (:class:`RegistrarMFAAdapter`).
"""

from __future__ import annotations

import logging
import re

from allauth.account.internal.flows.login import get_authentication_records, record_authentication
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils.http import urlencode

from portal.crypto import decrypt_json, encrypt_json
from portal.logs import log_event
from portal.roles import PRIVILEGED_ROLES, roles_of

logger = logging.getLogger(__name__)

#: Authenticators that count as a second factor; recovery codes only stand in for one.
FACTOR_TYPES = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)
#: Paths that stay open to a privileged session without a second factor (enrolling needs them).
EXEMPT_PREFIXES = ("/accounts/", "/static/", "/healthz", "/readyz", "/metrics", "/log/", "/favicon")
_BASE32 = re.compile(r"^[A-Z2-7]+=*$")

REASON_ENROL = "your role requires two-factor authentication: set up an authenticator app or a security key"
REASON_VERIFY = "your role requires two-factor authentication: confirm it for this session"


def mfa_required(user) -> bool:
    """Whether ``user`` must use a second factor (privileged, and the rule is on)."""
    if not getattr(settings, "REGISTRAR_MFA_REQUIRED", True):
        return False
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return bool(roles_of(user) & {r.value for r in PRIVILEGED_ROLES})


def mfa_enrolled(user) -> bool:
    return Authenticator.objects.filter(user_id=user.pk, type__in=FACTOR_TYPES).exists()


def session_passed_mfa(request) -> bool:
    """Whether this session's login (or a later re-authentication or enrolment) used a second factor."""
    return any(record.get("method") == "mfa" for record in get_authentication_records(request, request.user))


def _is_api(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


class MfaRequiredMiddleware:
    """Place after allauth's ``AccountMiddleware`` (it needs ``request.user`` from the session)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == reverse("admin:login"):
            # Django admin's own login form would skip allauth's second-factor stage: sign in through allauth.
            query = urlencode({"next": request.GET.get("next") or reverse("admin:index")})
            return HttpResponseRedirect(f"{reverse('account_login')}?{query}")
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or request.path.startswith(EXEMPT_PREFIXES):
            return self.get_response(request)
        if not mfa_required(user):
            return self.get_response(request)
        if not mfa_enrolled(user):
            return self._refuse(request, REASON_ENROL, reverse("mfa_index"))
        if not session_passed_mfa(request):
            return self._refuse(request, REASON_VERIFY, reverse("mfa_reauthenticate"))
        return self.get_response(request)

    def _refuse(self, request, reason: str, url: str):
        log_event(logger, "mfa_required", user_id=request.user.pk, path=request.path, reason=reason[-40:])
        if _is_api(request):
            return JsonResponse({"detail": f"Two-factor authentication required: {reason}."}, status=403)
        target = f"{url}?{urlencode({'next': request.get_full_path()})}"
        if request.headers.get("HX-Request"):
            response = JsonResponse({"detail": reason}, status=403)
            response["HX-Redirect"] = target
            return response
        messages.warning(request, reason[0].upper() + reason[1:] + ".")
        return HttpResponseRedirect(target)


class RegistrarMFAAdapter(DefaultMFAAdapter):
    """TOTP secrets encrypted at rest; the last second factor of a privileged person stays."""

    def encrypt(self, text: str) -> str:
        return encrypt_json(text)

    def decrypt(self, encrypted_text: str) -> str:
        if _BASE32.match(encrypted_text):  # a TOTP secret stored before encryption was switched on
            return encrypted_text
        return decrypt_json(encrypted_text)

    def can_delete_authenticator(self, authenticator: Authenticator) -> bool:
        if authenticator.type not in FACTOR_TYPES or not mfa_required(authenticator.user):
            return True
        others = Authenticator.objects.filter(user_id=authenticator.user_id, type__in=FACTOR_TYPES).exclude(
            pk=authenticator.pk
        )
        return others.exists()


def on_authenticator_added(sender, request=None, user=None, authenticator=None, **kwargs) -> None:
    """Enrolling proved the factor (a valid TOTP code, a security key's signature): it counts for this session."""
    if request is None or authenticator is None or authenticator.type not in FACTOR_TYPES:
        return
    record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type, enrolled=True)


def connect_signals() -> None:
    from allauth.mfa.signals import authenticator_added

    authenticator_added.connect(on_authenticator_added, dispatch_uid="portal.mfa.authenticator_added")
