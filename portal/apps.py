from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Registrar portal"

    def ready(self) -> None:
        from portal import mfa, sso

        mfa.connect_signals()  # enrolling a second factor counts for the session
        sso.connect_signals()  # roles from the SSO groups claim
