"""allauth adapters: no self sign-up; SSO accounts map onto existing, active people only."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter


class NoSignupAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return False


class RegistrarSocialAccountAdapter(DefaultSocialAccountAdapter):
    """OIDC SSO: log in people the directory already provisioned; never create accounts on the fly."""

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return False
