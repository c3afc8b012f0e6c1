"""allauth adapters: no self sign-up; SSO accounts map onto existing, active people only; login throttling
per real client address and per account by slowing down (portal.loginthrottle)."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.core.exceptions import ImproperlyConfigured, PermissionDenied

from portal import loginthrottle


class NoSignupAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return False

    def get_client_ip(self, request) -> str:
        loginthrottle.warn_if_behind_an_untrusted_proxy(request)
        try:
            return super().get_client_ip(request)
        except ImproperlyConfigured:  # fewer X-Forwarded-For entries than trusted proxies: not via them
            address = loginthrottle.peer_address_fallback(request)
            if not address:
                raise PermissionDenied("Unable to determine client IP address")
            return address

    def _get_login_attempts_cache_key(self, request, **credentials) -> str:
        # allauth keys its per-account failed-login limit on the account alone, so anyone could lock anyone
        # out; with the address in the key the limit stops the guesser where it stands.
        return f"{super()._get_login_attempts_cache_key(request, **credentials)}@{self.get_client_ip(request)}"

    def pre_authenticate(self, request, **credentials) -> None:
        super().pre_authenticate(request, **credentials)
        address = self.get_client_ip(request)
        if loginthrottle.slowed(account=loginthrottle.account_of(credentials), address=address):
            self._rollback_login_failed_rl_usage()  # a refused try guessed nothing: it does not count
            raise self.validation_error("too_many_login_attempts")

    def authenticate(self, request, **credentials):
        user = super().authenticate(request, **credentials)
        if user is not None:
            loginthrottle.record_success(
                account=loginthrottle.account_of(credentials), address=self.get_client_ip(request)
            )
        return user

    def authentication_failed(self, request, **credentials) -> None:
        super().authentication_failed(request, **credentials)
        loginthrottle.record_failure(account=loginthrottle.account_of(credentials))


class RegistrarSocialAccountAdapter(DefaultSocialAccountAdapter):
    """OIDC SSO: log in people the directory already provisioned; never create accounts on the fly."""

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return False
