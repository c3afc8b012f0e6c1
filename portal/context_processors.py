"""Template context shared by every page: roles, navigation counts, demo banner.

Navigation counts (the review queue's badge) belong to the apps: each registers the counts it provides at
start-up (:func:`nav_count_register`, from its ``AppConfig.ready()``); the kernel imports no app.
"""

from collections.abc import Callable

from django.conf import settings

from portal.roles import roles_of

# name -> (role that sees it, count(user) -> int)
_nav_counts: dict[str, tuple[str, Callable[[object], int]]] = {}


def nav_count_register(name: str, *, role: str, count: Callable[[object], int]) -> None:
    """``nav_counts.<name>`` for people with ``role``: ``count(user)``, run only if a template renders it."""
    _nav_counts[name] = (role, count)


def registrar(request):
    user = getattr(request, "user", None)
    roles = roles_of(user)
    nav_counts = {name: LazyCount(count, user) for name, (role, count) in _nav_counts.items() if role in roles}
    return {
        "roles": roles,
        "nav_counts": nav_counts,
        "demo_mode": settings.DEMO_MODE,
        "registrar_version": settings.REGISTRAR_VERSION,
    }


class LazyCount:
    """A count computed only if a template renders it (one query), then remembered for the request."""

    def __init__(self, count: Callable[[object], int], user):
        self._count, self._user = count, user
        self._value: int | None = None

    def _get(self) -> int:
        value = self._value
        if value is None:
            value = self._value = self._count(self._user)
        return value

    def __str__(self) -> str:
        return str(self._get())

    def __bool__(self) -> bool:
        return self._get() > 0

    def __int__(self) -> int:
        return int(self._get())  # a plain int: the count may be a BoundedCount (an int subclass)
