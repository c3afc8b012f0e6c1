"""Reads for the inventory pages and API; everything here is a read.

Split by page, import from here or from the module that holds a name:

- :mod:`~inventory.selectors.search` — who sees which clients, and free-text search (PostgreSQL indexes,
  SQLite fallback);
- :mod:`~inventory.selectors.explain` — "explain this client": origin, approvals, scopes, lineage, timeline;
- :mod:`~inventory.selectors.dashboard` — the sprawl dashboard's numbers and the report snapshot cache;
- :mod:`~inventory.selectors.owners` — an owner's clients and the inventory's home-page tiles;
- :mod:`~inventory.selectors.teams` — the teams suggested by the inventory's team picker.

What belongs to the approvals app (requests, decisions, registration stats) arrives through
``inventory.hooks``, which approvals fills at start-up: inventory never imports approvals.
"""

from inventory.selectors.dashboard import cached_report, dashboard_data, live_breakdown
from inventory.selectors.explain import client_explain, client_lineage
from inventory.selectors.owners import clients_of_owner, home_tiles
from inventory.selectors.search import client_search, clients_visible_to, configure_search_session, is_postgres
from inventory.selectors.teams import team_suggestions

__all__ = [
    "cached_report",
    "client_explain",
    "client_lineage",
    "client_search",
    "clients_of_owner",
    "clients_visible_to",
    "configure_search_session",
    "dashboard_data",
    "home_tiles",
    "is_postgres",
    "live_breakdown",
    "team_suggestions",
]
