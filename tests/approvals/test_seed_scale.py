"""seed_scale builds a consistent large inventory: every client owned, lineage valid, audit chain intact."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F

from approvals.management.commands import seed_scale
from inventory.catalogue import DEMO_SCOPES
from inventory.choices import ClientState
from inventory.counts import counts_reconcile
from inventory.models import Client, ScopeDefinition
from inventory.selectors import counts
from portal.audit import verify_chain
from portal.models import AuditEvent, LogCheckpoint

pytestmark = pytest.mark.django_db(transaction=True)  # it VACUUMs, which cannot run in a transaction


@pytest.mark.postgres_only  # COPY
@pytest.mark.parametrize("jobs", ["1", "2"])  # finished on the command's connection, or on two threads' own
def test_seed_scale_loads_a_consistent_inventory(jobs):
    out = StringIO()
    call_command("seed_scale", "--clients", "400", "--jobs", jobs, stdout=out)
    assert "audit log: 400 events loaded with their log indexes, sealed in place" in out.getvalue()
    assert_consistent()


def assert_consistent():
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


def _indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s)",
            [list(seed_scale.Command.BULK_TABLES)],
        )
        return {row[0] for row in cursor.fetchall()}


def _pending_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [seed_scale.PENDING_TABLE])
        return cursor.fetchone()[0]


@pytest.mark.postgres_only
def test_an_unfinished_seed_says_so_and_finish_completes_it(monkeypatch):
    """The load commits before the finishing steps; one of them failing leaves the rows, says how to recover, and
    blocks another seed until ``--finish`` has built the indexes, counts, VACUUM and seal."""
    indexes = _indexes()

    def broken(self):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(seed_scale.Command, "_counts", broken)
        with pytest.raises(CommandError, match="committed but was not finished.*seed_scale --finish"):
            call_command("seed_scale", "--clients", "400", stdout=StringIO())
    assert Client.objects.count() == 400  # committed
    assert _pending_exists()
    with pytest.raises(CommandError, match="run `manage.py seed_scale --finish` first"):
        call_command("seed_scale", "--clients", "10", stdout=StringIO())
    out = StringIO()
    call_command("seed_scale", "--finish", stdout=out)
    assert "seed_scale: finished" in out.getvalue()
    assert not _pending_exists()
    assert _indexes() == indexes
    assert_consistent()
    with pytest.raises(CommandError, match="nothing to finish"):
        call_command("seed_scale", "--finish", stdout=StringIO())


@pytest.mark.postgres_only
def test_a_failed_load_leaves_nothing_behind(monkeypatch):
    indexes = _indexes()

    def broken(self, base, *, preindex):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(seed_scale.Command, "_audit", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        call_command("seed_scale", "--clients", "400", stdout=StringIO())
    assert Client.objects.count() == 0
    assert not _pending_exists()
    assert _indexes() == indexes


def test_seed_scale_refuses_a_non_positive_size():
    with pytest.raises(CommandError, match="--clients must be at least 1"):
        call_command("seed_scale", "--clients", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="--jobs must be at least 1"):
        call_command("seed_scale", "--clients", "10", "--jobs", "0", stdout=StringIO())
    assert Client.objects.count() == 0
