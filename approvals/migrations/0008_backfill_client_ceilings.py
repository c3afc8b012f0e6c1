"""Give every existing managed client the approved ceiling it already had in effect.

Scopes and audiences: what the client holds now. Lifetime per renewal: the granted TTL of its latest
approved request (registration or renewal), else the tier ceiling of the active policy (else the
defaults). Shadow clients found at the IdP (managed=False) keep no ceiling: nobody approved them here,
so renewing one goes to review. Set-based (three UPDATEs), so it is quick on large inventories.

Lives in approvals because requests and policies are approvals' rows; the schema is inventory 0007.
"""

from django.db import migrations
from django.db.models import Case, F, IntegerField, OuterRef, Subquery, Value, When
from django.db.models.functions import Coalesce

# The defaults when the active policy row names none (DESIGN.md "Policy"), as they were when this ran.
DEFAULTS = {"low": 86400, "medium": 7 * 86400, "high": 86400}


def backfill(apps, schema_editor):
    Client = apps.get_model("inventory", "Client")
    Request = apps.get_model("approvals", "RegistrationRequest")
    Policy = apps.get_model("approvals", "Policy")
    active = Policy.objects.filter(is_active=True).first()
    thresholds = (active.thresholds or {}) if active is not None else {}
    ceilings = {}
    for tier, default in DEFAULTS.items():
        value = thresholds.get(f"{tier}_ttl_seconds")
        ceilings[tier] = value if isinstance(value, int) and value > 0 else default
    managed = Client.objects.filter(managed=True)
    managed.filter(ceiling_scopes__isnull=True).update(ceiling_scopes=F("scopes"))
    managed.filter(ceiling_audiences__isnull=True).update(ceiling_audiences=F("audiences"))
    approved_ttl = (
        Request.objects.filter(client=OuterRef("pk"), state="approved", granted_ttl__isnull=False)
        .order_by("-decided_at", "-pk").values("granted_ttl")[:1]
    )
    tier_default = Case(
        *[When(risk_tier=tier, then=Value(seconds)) for tier, seconds in ceilings.items()],
        default=Value(min(ceilings.values())), output_field=IntegerField(),
    )
    managed.filter(ceiling_ttl_seconds__isnull=True).update(
        ceiling_ttl_seconds=Coalesce(Subquery(approved_ttl, output_field=IntegerField()), tier_default)
    )


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0007_software_statement_use"),
        ("inventory", "0007_client_ceiling_hold_spawn"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
