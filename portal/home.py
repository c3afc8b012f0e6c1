"""Numbers for the home page tiles, per role. Reads only.

The kernel knows no app's models: each app registers the tiles it provides at start-up
(:func:`home_tiles_register` from its ``AppConfig.ready()``: inventory's clients, approvals' requests), and
:func:`home_summary` asks each for the signed-in person's roles.
"""

from __future__ import annotations

from collections.abc import Callable

from portal.roles import roles_of

# provider(user, roles) -> {tile key: number}; the keys the template reads are listed in portal/home.html.
TileProvider = Callable[[object, frozenset[str]], dict[str, int]]
_tile_providers: dict[str, TileProvider] = {}


def home_tiles_register(app_label: str, provider: TileProvider) -> None:
    """An app's tiles (registering again under the same label replaces them)."""
    _tile_providers[app_label] = provider


def home_summary(user) -> dict[str, int]:
    roles = roles_of(user)
    summary: dict[str, int] = {}
    for provider in _tile_providers.values():
        summary.update(provider(user, roles))
    return summary
