"""After a full ``migrate``, both engines refuse DELETE and any UPDATE of an audit event except the one-time
setting of its log index (the SQLite triggers used to vanish when a later migration rebuilt the table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from portal.audit import Actor, audit_record
from portal.models import AuditEvent
from portal.tlog.guard import EXPECTED, installed_triggers, missing_triggers

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres_only
@pytest.mark.django_db
def test_postgresql_has_every_trigger_after_migrate_and_they_refuse():
    assert connection.vendor == "postgresql"
    assert installed_triggers() >= EXPECTED["postgresql"] and not missing_triggers()
    event = audit_record(actor=Actor.system("t"), action="x", object_type="t", object_id=1)
    with connection.cursor() as cursor:
        for sql in (
            "DELETE FROM portal_auditevent WHERE id = %s",
            "UPDATE portal_auditevent SET reason = 'changed' WHERE id = %s",
        ):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
                cursor.execute(sql, [event.pk])
        cursor.execute("UPDATE portal_auditevent SET log_index = 0 WHERE id = %s", [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).log_index == 0


SQLITE_SCRIPT = r"""
import json, django
django.setup()
from django.db import connection
from portal.tlog.guard import installed_triggers, missing_triggers
assert connection.vendor == "sqlite", connection.vendor
out = {"triggers": sorted(map(list, installed_triggers())), "missing": sorted(map(list, missing_triggers()))}
with connection.cursor() as c:
    c.execute("INSERT INTO portal_auditevent (occurred_at, actor_type, actor_id, actor_label, action, object_type, "
              "object_id, reason, request_id, prev_hash) VALUES ('2026-01-01 00:00:00', 'system', '', 't', 'x', 't', "
              "'1', '', '', '')")
    event_id = c.lastrowid
    results = {}
    for name, sql in [
        ("delete", "DELETE FROM portal_auditevent WHERE id = %s"),
        ("update", "UPDATE portal_auditevent SET reason = 'changed' WHERE id = %s"),
        ("index_and_change", "UPDATE portal_auditevent SET log_index = 0, action = 'y' WHERE id = %s"),
        ("index", "UPDATE portal_auditevent SET log_index = 0 WHERE id = %s"),
        ("index_again", "UPDATE portal_auditevent SET log_index = 1 WHERE id = %s"),
        ("checkpoint_insert", None),
    ]:
        if sql is None:
            continue
        try:
            c.execute(sql, [event_id])
            results[name] = "ok"
        except Exception as exc:
            results[name] = str(exc)
    c.execute("SELECT reason, action, log_index FROM portal_auditevent WHERE id = %s", [event_id])
    out["row"] = list(c.fetchone())
    c.execute("INSERT INTO portal_logtile (level, tile_index, hashes) VALUES (0, 0, X'0102')")
    for name, sql in [("tile_grow", "UPDATE portal_logtile SET hashes = X'010203'"),
                      ("tile_change", "UPDATE portal_logtile SET hashes = X'090203'"),
                      ("tile_delete", "DELETE FROM portal_logtile")]:
        try:
            c.execute(sql)
            results[name] = "ok"
        except Exception as exc:
            results[name] = str(exc)
    c.execute("INSERT INTO portal_logcheckpoint (tree_size, root_hash, note, created_at) VALUES (1, 'r', 'n', '2026-01-01')")
    for name, sql in [("checkpoint_update", "UPDATE portal_logcheckpoint SET root_hash = 'x'"),
                      ("checkpoint_delete", "DELETE FROM portal_logcheckpoint")]:
        try:
            c.execute(sql)
            results[name] = "ok"
        except Exception as exc:
            results[name] = str(exc)
out["results"] = results
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sqlite_has_every_trigger_after_a_full_migrate_and_they_refuse(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "true",
        "REGISTRAR_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "ERROR",
    }
    run = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 600}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], **run)
    assert migrate.returncode == 0, migrate.stderr
    result = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], **run)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {tuple(t) for t in out["triggers"]} == EXPECTED["sqlite"] and out["missing"] == []
    results = out["results"]
    assert "append-only (DELETE refused)" in results["delete"]
    assert "append-only (UPDATE refused)" in results["update"]
    assert "append-only (UPDATE refused)" in results["index_and_change"]
    assert results["index"] == "ok"
    assert "append-only (UPDATE refused)" in results["index_again"]
    assert out["row"] == ["", "x", 0]
    assert results["tile_grow"] == "ok"
    assert "only grow" in results["tile_change"] and "only grow" in results["tile_delete"]
    assert "append-only" in results["checkpoint_update"] and "append-only" in results["checkpoint_delete"]
