"""Search and sort indexes for the security inventory (PostgreSQL only).

* ``pg_trgm`` + GIN trigram indexes: ``ILIKE '%q%'`` and typo-tolerant ``q <% column`` over the
  free-text columns use them instead of scanning the table; identifiers get prefix (pattern) indexes.
* A stored generated ``search_document`` tsvector (name + purpose, English stemming) with a GIN index,
  so ``search_document @@ websearch_to_tsquery(...)`` is an index scan whose recheck is cheap.
* ``(sort column, id)`` btree indexes so keyset pagination reads one index range per page.

SQLite (``make run``) skips all of this: search falls back to ``icontains`` there and the tables are small.
"""

from django.db import migrations

# The generated column search_document (inventory.selectors.SEARCH_DOCUMENT_SQL names it) is this expression.
SEARCH_DOCUMENT_SQL = "to_tsvector('english'::regconfig, coalesce(name, '') || ' ' || coalesce(purpose, ''))"

# Free text (substrings and typos) is searched in these; identifiers are searched by prefix (btree
# pattern indexes below; registration_id already has Django's ``_like`` index). A trigram GIN index
# per identifier column would cost ~8 s each at 1M rows in seed_scale for little use: people paste ids.
TRGM_COLUMNS = ["name", "purpose", "software_id"]
PATTERN_COLUMNS = ["idp_client_id", "spiffe_id"]

FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    # A stored generated column, unknown to the Django model on purpose: PostgreSQL keeps it current on
    # every INSERT/UPDATE, and the search's recheck reads it instead of re-running to_tsvector per row.
    f"ALTER TABLE inventory_client ADD COLUMN IF NOT EXISTS search_document tsvector "
    f"GENERATED ALWAYS AS ({SEARCH_DOCUMENT_SQL}) STORED",
    *[
        f"CREATE INDEX IF NOT EXISTS client_{col}_trgm_idx ON inventory_client USING gin ({col} gin_trgm_ops)"
        for col in TRGM_COLUMNS
    ],
    *[
        f"CREATE INDEX IF NOT EXISTS client_{col}_pattern_idx ON inventory_client ({col} varchar_pattern_ops)"
        for col in PATTERN_COLUMNS
    ],
    "CREATE INDEX IF NOT EXISTS client_search_fts_idx ON inventory_client USING gin (search_document)",
    "CREATE INDEX IF NOT EXISTS client_created_id_idx ON inventory_client (created_at, id)",
    "CREATE INDEX IF NOT EXISTS client_name_id_idx ON inventory_client (name, id)",
    "CREATE INDEX IF NOT EXISTS client_expires_id_idx ON inventory_client (expires_at, id)",
    "CREATE INDEX IF NOT EXISTS client_ended_idx ON inventory_client (ended_at) WHERE ended_at IS NOT NULL",
    # The dashboard's live breakdown (GROUPING SETS) reads only this narrow partial index (index-only scan).
    "CREATE INDEX IF NOT EXISTS client_live_dims_idx ON inventory_client (risk_tier, idp_id, team_id, owner_id, depth) "
    "INCLUDE (orphaned_at, stale_at, managed, sync_failed, expires_at) "
    "WHERE state IN ('provisioning', 'active', 'suspended')",
    "CREATE INDEX IF NOT EXISTS client_overshoot_idx ON inventory_client (expiry_overshoot_seconds) "
    "WHERE expiry_overshoot_seconds IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS user_username_trgm_idx ON portal_user USING gin (username gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS user_fullname_trgm_idx ON portal_user "
    "USING gin ((first_name || ' ' || last_name) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS team_name_trgm_idx ON inventory_team USING gin (name gin_trgm_ops)",
]

INDEX_NAMES = [
    *[f"client_{col}_trgm_idx" for col in TRGM_COLUMNS],
    *[f"client_{col}_pattern_idx" for col in PATTERN_COLUMNS],
    "client_search_fts_idx",
    "client_created_id_idx",
    "client_name_id_idx",
    "client_expires_id_idx",
    "client_ended_idx",
    "client_live_dims_idx",
    "client_overshoot_idx",
    "user_username_trgm_idx",
    "user_fullname_trgm_idx",
    "team_name_trgm_idx",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in FORWARD:
        schema_editor.execute(statement)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEX_NAMES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
    schema_editor.execute("ALTER TABLE inventory_client DROP COLUMN IF EXISTS search_document")
    # The extension stays: other objects may depend on it and dropping it needs superuser.


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0004_lifecycle_merge_provisioning"),
        ("portal", "0001_initial"),
    ]

    operations = [migrations.RunPython(forward, backward)]
