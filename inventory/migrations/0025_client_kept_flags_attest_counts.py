"""The framework report's last five controls from kept state (docs/scale.md, "Controls at 10M").

- ``Client.uncatalogued_scopes`` and ``outside_parent``: kept by the triggers of ``inventory.flag_triggers``;
  ``two_person_approved`` by approvals' (its migration 0022). Partial indexes hold only the live clients that fail,
  so counting them reads the failures, not the clients; one more holds the active orphans by orphaning time.
- The attestation rollup (``ClientAttestCount`` and its all-teams projection): active managed clients per team,
  tier and the UTC week their attestation period started. The client trigger's signature gains that start
  (``attest_basis``); clients already active enter the new rollup as a pair of deltas (-1 without it, +1 with it),
  which leaves every other rollup as it was (as 0020 did for the overshoot).

The count trigger is dropped before the delta table changes and created again after; the new columns are
nullable with a constant default so SQLite alters the client table in place and keeps its triggers.
"""

import importlib

import django.db.models.functions.comparison
from django.conf import settings
from django.db import migrations, models

from inventory import flag_triggers
from inventory.count_triggers import DeltaTrigger



_0018 = importlib.import_module("inventory.migrations.0018_client_count_triggers")
_0020 = importlib.import_module("inventory.migrations.0020_client_overshoot_counts")

ATTEST_BASIS = "COALESCE(R.attested_at, R.activated_at, R.created_at)"
CLIENT_TRIGGER = DeltaTrigger(
    name="client_count_delta",
    table="inventory_client",
    delta_table="inventory_clientcountdelta",
    signature=(*_0020.CLIENT_TRIGGER.signature, ("attest_basis", ATTEST_BASIS)),
    watched=(*_0020.CLIENT_TRIGGER.watched, ATTEST_BASIS),
)
ACTIVE = "R.state = 'active' AND R.managed"


def drop_triggers(apps, schema_editor):
    CLIENT_TRIGGER.uninstall(schema_editor)


def create_triggers(apps, schema_editor):
    CLIENT_TRIGGER.install(schema_editor)
    schema_editor.execute(CLIENT_TRIGGER.backfill(-1, where=ACTIVE, replace={"attest_basis": "NULL"}))
    schema_editor.execute(CLIENT_TRIGGER.backfill(1, where=ACTIVE))
    flag_triggers.install(schema_editor)
    schema_editor.execute(flag_triggers.recompute_sql(schema_editor.connection.vendor))


def drop_new_triggers(apps, schema_editor):
    """Backwards: the attestation starts leave the counts again; the flags' triggers go."""
    flag_triggers.uninstall(schema_editor)
    schema_editor.execute(CLIENT_TRIGGER.backfill(-1, where=ACTIVE))
    schema_editor.execute(CLIENT_TRIGGER.backfill(1, where=ACTIVE, replace={"attest_basis": "NULL"}))
    CLIENT_TRIGGER.uninstall(schema_editor)


def restore_old_triggers(apps, schema_editor):
    _0020.CLIENT_TRIGGER.install(schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0024_owner_live_top_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(drop_triggers, restore_old_triggers),
        migrations.CreateModel(
            name='ClientAttestCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('risk_tier', models.CharField(max_length=8, verbose_name='risk tier')),
                ('week', models.DateField(verbose_name='attestation period from (week)')),
                ('n', models.BigIntegerField(default=0, verbose_name='clients')),
                ('team_id', models.IntegerField(verbose_name='team')),
            ],
            options={
                'verbose_name': 'client count per attestation week',
            },
        ),
        migrations.CreateModel(
            name='ClientAttestCountAllTeams',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('risk_tier', models.CharField(max_length=8, verbose_name='risk tier')),
                ('week', models.DateField(verbose_name='attestation period from (week)')),
                ('n', models.BigIntegerField(default=0, verbose_name='clients')),
            ],
            options={
                'verbose_name': 'client count per attestation week, all teams',
            },
        ),
        migrations.AddField(
            model_name='client',
            name='outside_parent',
            field=models.BooleanField(db_default=False, editable=False, null=True, verbose_name='holds more than its parent or outlives it'),
        ),
        migrations.AddField(
            model_name='client',
            name='two_person_approved',
            field=models.BooleanField(db_default=False, editable=False, null=True, verbose_name='registration approved by two people'),
        ),
        migrations.AddField(
            model_name='client',
            name='uncatalogued_scopes',
            field=models.BooleanField(db_default=False, editable=False, null=True, verbose_name='holds a scope outside the catalogue'),
        ),
        migrations.AddField(
            model_name='clientcountdelta',
            name='attest_basis',
            field=models.DateTimeField(null=True, verbose_name='attestation period from'),
        ),
        migrations.AddIndex(
            model_name='client',
            index=models.Index(condition=models.Q(('orphaned_at__isnull', False), ('state__in', ['active', 'provisioning'])), fields=['team', 'orphaned_at'], name='client_orphan_active_idx'),
        ),
        migrations.AddIndex(
            model_name='client',
            index=models.Index(condition=models.Q(('state__in', ['active', 'provisioning', 'suspended']), ('uncatalogued_scopes', True)), fields=['team'], name='client_uncatalogued_idx'),
        ),
        migrations.AddIndex(
            model_name='client',
            index=models.Index(condition=models.Q(('outside_parent', True), ('state__in', ['active', 'provisioning', 'suspended'])), fields=['team'], name='client_outside_parent_idx'),
        ),
        migrations.AddIndex(
            model_name='client',
            index=models.Index(condition=models.Q(('managed', True), ('risk_tier', 'high'), ('state__in', ['active', 'provisioning', 'suspended']), models.Q(('two_person_approved', True), _negated=True)), fields=['team'], name='client_high_one_person_idx'),
        ),
        migrations.AddIndex(
            model_name='client',
            index=models.Index(models.F('risk_tier'), django.db.models.functions.comparison.Coalesce('attested_at', 'activated_at', 'created_at'), models.F('team'), condition=models.Q(('managed', True), ('state', 'active')), include=('attested_at', 'activated_at', 'created_at'), name='client_attest_basis_idx'),
        ),
        migrations.AddConstraint(
            model_name='clientattestcount',
            constraint=models.UniqueConstraint(fields=('team_id', 'risk_tier', 'week'), name='client_attest_count_key'),
        ),
        migrations.AddConstraint(
            model_name='clientattestcountallteams',
            constraint=models.UniqueConstraint(fields=('risk_tier', 'week'), name='client_attest_count_all_key'),
        ),
        migrations.RunPython(create_triggers, drop_new_triggers),
    ]
