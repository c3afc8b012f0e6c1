"""``Client.two_person_approved`` kept by the database from the approvals (``approvals.approval_flags``): the
triggers, then the flag set for the clients already there."""

from django.db import migrations

from approvals import approval_flags


def install(apps, schema_editor):
    approval_flags.install(schema_editor)
    schema_editor.execute(approval_flags.recompute_sql())


def uninstall(apps, schema_editor):
    approval_flags.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0021_team_first_count_keys"),
        ("inventory", "0025_client_kept_flags_attest_counts"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
