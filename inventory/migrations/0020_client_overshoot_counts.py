"""The expiry overshoot kept as a histogram (``inventory.histograms``): the client trigger's signature gains the
overshoot, and ``ClientOvershootCount`` counts clients per (team, overshoot bucket) for the dashboard's p99.

The triggers are dropped before the delta table changes and created again after (SQLite rebuilds what it
alters); like 0018, this must stay after every schema change to ``inventory_client``. Clients whose overshoot
was already recorded enter the new rollup as a pair of deltas (-1 without the overshoot, +1 with it), which
leaves every other rollup as it was.
"""

import importlib

from django.db import migrations, models

from inventory.count_triggers import DeltaTrigger

_0018 = importlib.import_module("inventory.migrations.0018_client_count_triggers")

CLIENT_TRIGGER = DeltaTrigger(
    name="client_count_delta",
    table="inventory_client",
    delta_table="inventory_clientcountdelta",
    signature=(*_0018.SIGNATURE, ("expiry_overshoot_seconds", "R.expiry_overshoot_seconds")),
    watched=(*(f"R.{c}" for c in _0018.WATCHED), "R.expiry_overshoot_seconds"),
)
OLD_TRIGGER = DeltaTrigger(
    name="client_count_delta",
    table="inventory_client",
    delta_table="inventory_clientcountdelta",
    signature=_0018.SIGNATURE,
    watched=tuple(f"R.{c}" for c in _0018.WATCHED),
)


def drop_triggers(apps, schema_editor):
    CLIENT_TRIGGER.uninstall(schema_editor)


def create_triggers(apps, schema_editor):
    CLIENT_TRIGGER.install(schema_editor)
    recorded = "R.expiry_overshoot_seconds IS NOT NULL"
    schema_editor.execute(CLIENT_TRIGGER.backfill(-1, where=recorded, replace={"expiry_overshoot_seconds": "NULL"}))
    schema_editor.execute(CLIENT_TRIGGER.backfill(1, where=recorded))


def drop_triggers_and_overshoot(apps, schema_editor):
    """Backwards: the overshoot leaves the counts again (-1 with it, +1 without: the older rollups unchanged)."""
    recorded = "R.expiry_overshoot_seconds IS NOT NULL"
    schema_editor.execute(CLIENT_TRIGGER.backfill(-1, where=recorded))
    schema_editor.execute(CLIENT_TRIGGER.backfill(1, where=recorded, replace={"expiry_overshoot_seconds": "NULL"}))
    CLIENT_TRIGGER.uninstall(schema_editor)


def restore_old_triggers(apps, schema_editor):
    OLD_TRIGGER.install(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("inventory", "0019_sqlite_client_fts")]

    operations = [
        migrations.RunPython(drop_triggers, restore_old_triggers),
        migrations.AddField(
            model_name="clientcountdelta",
            name="expiry_overshoot_seconds",
            field=models.FloatField(null=True, verbose_name="expiry overshoot (s)"),
        ),
        migrations.CreateModel(
            name="ClientOvershootCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("team_id", models.IntegerField(verbose_name="team")),
                ("bucket", models.SmallIntegerField(verbose_name="overshoot bucket")),
                ("n", models.BigIntegerField(default=0, verbose_name="clients")),
            ],
            options={
                "verbose_name": "client count per expiry overshoot",
                "constraints": [
                    models.UniqueConstraint(fields=("team_id", "bucket"), name="client_overshoot_count_key")
                ],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers_and_overshoot),
    ]
