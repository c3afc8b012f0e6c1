"""Everyone's attestation control by day: ``ClientAttestDayCount`` (tier, UTC day the attestation period started)
replaces the all-teams projection by week (docs/scale.md, "Controls at 10M").

The cut's own day is counted exactly from ``client_attest_basis_idx``: a seventh of the week it used to count
(27k → 4k medium-tier clients at 10M). A projection cannot be finer than its rollup, so the new table is a rollup
of its own, filled here from the clients less the deltas not folded yet (the folder adds those later), with the
folder kept out until the migration commits (PostgreSQL; SQLite's writers queue anyway).
"""

from django.db import migrations, models

from inventory.count_triggers import COUNTS_LOCK

_FILL = """
INSERT INTO inventory_clientattestdaycount (risk_tier, day, n)
SELECT risk_tier, day, SUM(n) FROM (
    SELECT risk_tier, {day_of_basis} AS day, COUNT(*) AS n FROM inventory_client
    WHERE state = 'active' AND managed GROUP BY 1, 2
    UNION ALL
    SELECT risk_tier, {day_of_delta} AS day, -SUM(n) AS n FROM inventory_clientcountdelta
    WHERE state = 'active' AND managed AND attest_basis IS NOT NULL GROUP BY 1, 2
) AS u
GROUP BY risk_tier, day HAVING SUM(n) <> 0
"""
BASIS = "COALESCE(attested_at, activated_at, created_at)"


def fill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"SELECT pg_advisory_xact_lock({COUNTS_LOCK})")
        day = "CAST(({} AT TIME ZONE 'UTC') AS date)"
    else:
        day = "date({})"
    schema_editor.execute(_FILL.format(day_of_basis=day.format(BASIS), day_of_delta=day.format("attest_basis")))


def fill_weeks(apps, schema_editor):
    """Backwards: the all-teams projection by week again, from its rollup's folded rows."""
    from inventory.count_triggers import fill_projection

    fill_projection(
        schema_editor,
        target="inventory_clientattestcountallteams",
        rollup="inventory_clientattestcount",
        keys=("risk_tier", "week"),
    )


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0027_cube_two_person_orphan_counts'),
    ]

    operations = [
        migrations.CreateModel(
            name='ClientAttestDayCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('risk_tier', models.CharField(max_length=8, verbose_name='risk tier')),
                ('day', models.DateField(verbose_name='attestation period from (day)')),
                ('n', models.BigIntegerField(default=0, verbose_name='clients')),
            ],
            options={
                'verbose_name': 'client count per attestation day, all teams',
            },
        ),
        migrations.RunPython(migrations.RunPython.noop, fill_weeks),
        migrations.DeleteModel(
            name='ClientAttestCountAllTeams',
        ),
        migrations.AddConstraint(
            model_name='clientattestdaycount',
            constraint=models.UniqueConstraint(fields=('risk_tier', 'day'), name='client_attest_day_count_key'),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
