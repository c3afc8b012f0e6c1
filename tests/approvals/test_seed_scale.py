"""seed_scale builds a consistent large inventory: every client owned, lineage valid, audit chain intact."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F

from inventory.catalogue import DEMO_SCOPES
from inventory.choices import ClientState
from inventory.counts import counts_reconcile
from inventory.models import Client, ScopeDefinition
from inventory.selectors import counts
from portal.audit import verify_chain
from portal.models import AuditEvent, LogCheckpoint

pytestmark = pytest.mark.django_db(transaction=True)  # it VACUUMs, which cannot run in a transaction


@pytest.mark.postgres_only  # COPY
def test_seed_scale_loads_a_consistent_inventory():
    out = StringIO()
    call_command("seed_scale", "--clients", "400", stdout=out)
    assert "audit log: 400 events loaded with their log indexes, sealed in place" in out.getvalue()
    assert Client.objects.count() == 400
    assert not Client.objects.filter(owner__isnull=True, managed=True).exists()
    catalogue = set(ScopeDefinition.objects.values_list("name", flat=True))
    assert {name for name, *_ in DEMO_SCOPES} <= catalogue
    assert all(set(scopes) <= catalogue for scopes in Client.objects.values_list("scopes", flat=True))
    children = Client.objects.filter(parent__isnull=False)
    assert children.exists()
    assert not children.exclude(depth=F("parent__depth") + 1).exists()
    assert not Client.objects.filter(outside_parent=True).exists()  # children within their parents (lineage SQL)
    checked, broken = verify_chain()
    assert broken is None and checked >= 400
    # loaded with their log indexes and sealed in place (log_seal_preindexed): nothing waits, nothing was rewritten
    assert not AuditEvent.objects.filter(log_index__isnull=True).exists()
    assert LogCheckpoint.objects.order_by("-tree_size").first().tree_size == AuditEvent.objects.count()
    # COPY as a replica skips the count triggers; seed_scale rebuilt the counts, and they agree with the clients
    assert counts_reconcile().keys == 0
    assert sum(n for *_key, n in counts.cube(("state",), states=ClientState.values)) == 400


def test_seed_scale_refuses_a_non_positive_size():
    with pytest.raises(CommandError, match="--clients must be at least 1"):
        call_command("seed_scale", "--clients", "0", stdout=StringIO())
    assert Client.objects.count() == 0
