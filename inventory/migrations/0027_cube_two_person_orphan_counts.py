"""The last two controls that read clients, counted (docs/scale.md, "Controls at 10M").

- The cube gains ``two_person`` (``Client.two_person_approved``): the high-tier approval control is two sums of
  the cube instead of a count of the failing clients, whose number grows with the estate.
- ``ClientOrphanCount`` (and its all-teams projection): active and provisioning orphans per team and hour they
  were orphaned. The orphan-grace control sums the whole hours past grace and counts only the hour grace ends in,
  from ``client_orphan_active_idx`` (now orphaning time first, so everyone's edge hour is one range).
- The client trigger's signature gains both (``two_person``, ``orphaned_at``). Clients already two-person approved
  or orphaned enter as a pair of deltas (-1 with the old values, +1 with theirs): the cube's rows move to their
  ``two_person`` value and the orphan counts fill, every other rollup as it was (as 0020 and 0025 did).
- ``created_at``'s own index goes: ``client_created_id_idx`` (created_at, id) serves every read by creation time.
  Dropped by name, not by AlterField: SQLite would rebuild the client table and drop its triggers.
"""

import importlib

from django.conf import settings
from django.db import migrations, models

from inventory.count_triggers import DeltaTrigger

_0025 = importlib.import_module("inventory.migrations.0025_client_kept_flags_attest_counts")

TWO_PERSON = "COALESCE(R.two_person_approved, FALSE)"
CLIENT_TRIGGER = DeltaTrigger(
    name="client_count_delta",
    table="inventory_client",
    delta_table="inventory_clientcountdelta",
    signature=(*_0025.CLIENT_TRIGGER.signature, ("two_person", TWO_PERSON), ("orphaned_at", "R.orphaned_at")),
    watched=(*_0025.CLIENT_TRIGGER.watched, TWO_PERSON, "R.orphaned_at"),
)
COUNTED = f"{TWO_PERSON} OR R.orphaned_at IS NOT NULL"
BEFORE = {"two_person": "FALSE", "orphaned_at": "NULL"}
CREATED_AT_INDEX = "inventory_client_created_at_87637092"


def drop_triggers(apps, schema_editor):
    CLIENT_TRIGGER.uninstall(schema_editor)


def create_triggers(apps, schema_editor):
    CLIENT_TRIGGER.install(schema_editor)
    schema_editor.execute(CLIENT_TRIGGER.backfill(-1, where=COUNTED, replace=BEFORE))
    schema_editor.execute(CLIENT_TRIGGER.backfill(1, where=COUNTED))


def drop_new_triggers(apps, schema_editor):
    """Backwards: the two-person approvals and orphaning hours leave the counts again."""
    schema_editor.execute(CLIENT_TRIGGER.backfill(-1, where=COUNTED))
    schema_editor.execute(CLIENT_TRIGGER.backfill(1, where=COUNTED, replace=BEFORE))
    CLIENT_TRIGGER.uninstall(schema_editor)


def restore_old_triggers(apps, schema_editor):
    _0025.CLIENT_TRIGGER.install(schema_editor)


def drop_created_at_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {CREATED_AT_INDEX}")


def create_created_at_index(apps, schema_editor):
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {CREATED_AT_INDEX} ON inventory_client (created_at)")


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0026_client_expiry_index_covers_tier'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(drop_triggers, restore_old_triggers),
        migrations.CreateModel(
            name='ClientOrphanCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('team_id', models.IntegerField(verbose_name='team')),
                ('orphaned_hour', models.DateTimeField(verbose_name='orphaned within the hour starting')),
                ('n', models.BigIntegerField(default=0, verbose_name='clients')),
            ],
            options={
                'verbose_name': 'client count per orphaning hour',
            },
        ),
        migrations.CreateModel(
            name='ClientOrphanCountAllTeams',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('orphaned_hour', models.DateTimeField(unique=True, verbose_name='orphaned within the hour starting')),
                ('n', models.BigIntegerField(default=0, verbose_name='clients')),
            ],
            options={
                'verbose_name': 'client count per orphaning hour, all teams',
            },
        ),
        migrations.RemoveConstraint(
            model_name='clientcount',
            name='client_count_key',
        ),
        migrations.RemoveConstraint(
            model_name='clientcountallteams',
            name='client_count_all_key',
        ),
        migrations.RemoveIndex(
            model_name='client',
            name='client_orphan_active_idx',
        ),
        migrations.RemoveIndex(
            model_name='client',
            name='client_high_one_person_idx',
        ),
        migrations.AddField(
            model_name='clientcount',
            name='two_person',
            field=models.BooleanField(db_default=False, default=False, verbose_name='approved by two people'),
        ),
        migrations.AddField(
            model_name='clientcountallteams',
            name='two_person',
            field=models.BooleanField(db_default=False, default=False, verbose_name='approved by two people'),
        ),
        migrations.AddField(
            model_name='clientcountdelta',
            name='orphaned_at',
            field=models.DateTimeField(null=True, verbose_name='orphaned at'),
        ),
        migrations.AddField(
            model_name='clientcountdelta',
            name='two_person',
            field=models.BooleanField(null=True, verbose_name='approved by two people'),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_created_at_index, create_created_at_index)],
            state_operations=[
                migrations.AlterField(
                    model_name='client',
                    name='created_at',
                    field=models.DateTimeField(auto_now_add=True, verbose_name='created at'),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name='client',
            index=models.Index(condition=models.Q(('orphaned_at__isnull', False), ('state__in', ['active', 'provisioning'])), fields=['orphaned_at', 'team'], name='client_orphan_active_idx'),
        ),
        migrations.AddConstraint(
            model_name='clientcount',
            constraint=models.UniqueConstraint(fields=('team_id', 'state', 'risk_tier', 'idp_id', 'created_via', 'depth', 'auth_method', 'managed', 'orphaned', 'stale', 'sync_failed', 'drifted', 'no_purpose', 'no_expiry', 'two_person'), name='client_count_key'),
        ),
        migrations.AddConstraint(
            model_name='clientcountallteams',
            constraint=models.UniqueConstraint(fields=('state', 'risk_tier', 'idp_id', 'created_via', 'depth', 'auth_method', 'managed', 'orphaned', 'stale', 'sync_failed', 'drifted', 'no_purpose', 'no_expiry', 'two_person'), name='client_count_all_key'),
        ),
        migrations.AddConstraint(
            model_name='clientorphancount',
            constraint=models.UniqueConstraint(fields=('team_id', 'orphaned_hour'), name='client_orphan_count_key'),
        ),
        migrations.RunPython(create_triggers, drop_new_triggers),
    ]
