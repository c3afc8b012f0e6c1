"""Template context shared by every page: roles, navigation counts, demo banner."""

from django.conf import settings

from portal.roles import Role, roles_of


def registrar(request):
    user = getattr(request, "user", None)
    roles = roles_of(user)
    nav_counts = {}
    if Role.APPROVER in roles:
        # Imported lazily: portal must not import the apps at module level (DESIGN.md import direction).
        from django.apps import apps

        nav_counts["pending_approvals"] = lazy_pending_count(apps, user)
    return {
        "roles": roles,
        "nav_counts": nav_counts,
        "demo_mode": settings.DEMO_MODE,
        "registrar_version": settings.REGISTRAR_VERSION,
    }


class lazy_pending_count:  # noqa: N801 - behaves like a value in templates
    """Counts pending requests only if a template renders the badge (one query)."""

    def __init__(self, apps, user):
        self._apps, self._user, self._value = apps, user, None

    def _get(self) -> int:
        if self._value is None:
            model = self._apps.get_model("approvals", "RegistrationRequest")
            self._value = model.objects.awaiting_decision_by(self._user).count()
        return self._value

    def __str__(self) -> str:
        return str(self._get())

    def __bool__(self) -> bool:
        return self._get() > 0

    def __int__(self) -> int:
        return self._get()
