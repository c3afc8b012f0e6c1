"""Policy version 1: the defaults from DESIGN.md (empty thresholds mean 'use the defaults')."""

from django.db import migrations


def forward(apps, schema_editor):
    Policy = apps.get_model("approvals", "Policy")
    if not Policy.objects.exists():
        Policy.objects.create(version=1, thresholds={}, is_active=True, note="DESIGN.md defaults")


class Migration(migrations.Migration):
    dependencies = [("approvals", "0002_initial")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
