"""Reads about teams for the inventory pages: the suggestions behind the inventory's team picker."""

from __future__ import annotations

from typing import cast

from django.db.models import Q

from inventory.models import Team

SUGGESTION_LIMIT = 20
# No team's name (nor its shorter slug) is longer: a longer text matches nothing and never reaches the database.
LONGEST_NAME = cast(int, Team._meta.get_field("name").max_length)


def team_suggestions(*, text: str, limit: int = SUGGESTION_LIMIT) -> list[tuple[str, str]]:
    """At most ``limit`` teams whose name or slug contains ``text`` (case-insensitive; every team when blank),
    by name, as (slug, name) pairs."""
    text = text.strip()
    if len(text) > LONGEST_NAME:
        return []
    teams = Team.objects.order_by("name")
    if text:
        teams = teams.filter(Q(name__icontains=text) | Q(slug__icontains=text))
    return list(teams.values_list("slug", "name")[:limit])
