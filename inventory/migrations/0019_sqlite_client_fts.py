"""SQLite only: the clients' FTS5 trigram search index and the triggers that keep it current
(``inventory.search_index``). A no-op on PostgreSQL, which searches with pg_trgm and a tsvector (0005)."""

from django.db import migrations


def forward(apps, schema_editor):
    from inventory.search_index import ensure_sqlite_fts

    ensure_sqlite_fts(schema_editor.connection)


def backward(apps, schema_editor):
    from inventory.search_index import drop_sqlite_fts

    drop_sqlite_fts(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("inventory", "0018_client_count_triggers")]
    operations = [migrations.RunPython(forward, backward)]
