"""Benchmark the expiry sweep: clients transitioned per second vs a raw-SQL baseline, and peak RSS.

Run from the repository root (PostgreSQL required)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/registrar_bench python bench/sweep.py \
        [--clients 1000000] [--due 100000] [--batch-size 500]

What it does, in one run:

1. builds a source database ``<name>_src`` (migrations + ``--clients`` clients, ``--due`` of them active
   and past ``expires_at``, the rest active-not-due or already ended), generated server-side with
   ``generate_series`` from one template row, the secondary indexes dropped during the load and rebuilt after;
2. clones it once with ``CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`` for the baseline and renames the
   source for the sweep (identical copies; 10M clients are on disk twice, not three times);
3. baseline on copy A: one raw SQL statement ``UPDATE … WHERE state='active' AND expires_at < now()``
   plus one INSERT per moved row into the audit table and one into the outbox table (the client table's count
   trigger fires for it as for the sweep: the line reports the count deltas each side wrote);
4. the real ``sweep_expired`` on copy B in a separate worker process (IdP delivery excluded: nothing is
   delivered, the outbox rows are only written), measuring clients/s and the worker's peak RSS;
5. checks the result (every due client expired, one audit event + one outbox row each, chain valid),
   prints the figures and appends a line to bench/RESULTS.md.

Goal (issue 6): ≥ 2,000 clients/s, ratio ≥ 0.25 to the baseline, worker peak RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "One line per run, appended by the scripts in bench/. Ratios compare against a baseline measured in the\n"
    "same run; absolute times depend on the machine.\n\n"
)
GOAL_RATE, GOAL_RATIO, GOAL_RSS_MB = 2000.0, 0.25, 300.0
NOW_SQL = "TIMESTAMPTZ '2030-01-01 00:00:00+00'"  # the sweep's "now", far from the real clock


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DEBUG"] = "false"  # no query log growing in memory
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdef-not-for-production")
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("REGISTRAR_ENCRYPTION_KEY", "YmVuY2gtb25seS1rZXktMDEyMzQ1Njc4OWFiY2RlZmc=")  # bench-only
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
    import django

    django.setup()


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def build_source(url: str, clients: int, due: int) -> None:
    """Migrate a fresh ``_src`` database and fill it (runs in a child process: one Django per process)."""
    _django(url)
    from django.core.management import call_command
    from django.db import connection

    from inventory.choices import IdPKind
    from inventory.models import Client, IdPConnection
    from portal.models import User

    call_command("migrate", verbosity=0)
    owner = User.objects.create(username="bench-owner", email="bench@example.com")
    idp = IdPConnection.objects.create(name="bench-dry-run", kind=IdPKind.DRY_RUN, is_default=True)
    template = Client.objects.create(
        registration_id="reg_template",
        idp=idp,
        name="template",
        owner=owner,
        scopes=["tickets:read"],
        state="retired",
        expires_at=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
    )
    columns = [f.column for f in Client._meta.concrete_fields if f.column != "id"]
    overrides = {
        "registration_id": "'reg_b' || lpad(g::text, 9, '0')",
        "idp_client_id": "'bench-' || g::text",
        "name": "'agent-' || g::text",
        # g <= due: active and past expiry; then 60 % active later; the rest already ended.
        "state": f"CASE WHEN g <= {due} THEN 'active' WHEN g %% 10 < 6 THEN 'active' ELSE 'retired' END",
        "expires_at": f"CASE WHEN g <= {due} THEN {NOW_SQL} - (1 + g %% 3600) * INTERVAL '1 second' "
        f"ELSE {NOW_SQL} + (1 + g %% 700) * INTERVAL '1 hour' END",
    }
    select = ", ".join(overrides.get(col, f"t.{col}") for col in columns)
    with connection.cursor() as cursor:
        # Fast bulk load: the secondary indexes are dropped and rebuilt after the rows are in (one sorted build
        # each instead of 10M random insertions), and the load runs as ``session_replication_role = replica``
        # so neither the FK checks nor the count trigger fire per row (no 10M count deltas: the rollups are
        # not read here). The primary key and the registration id's unique index stay.
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = 'inventory_client'::regclass AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        )
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f"DROP INDEX {name}")
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            f"INSERT INTO inventory_client ({', '.join(columns)}) "  # noqa: S608 - bench, fixed SQL
            f"SELECT {select} FROM inventory_client t, generate_series(1, %s) g WHERE t.id = %s",
            [clients, template.pk],
        )
        cursor.execute("DELETE FROM inventory_client WHERE id = %s", [template.pk])
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("DELETE FROM inventory_clientcountdelta")  # the template's +1 (its DELETE was not counted)
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _name, definition in indexes:
            cursor.execute(definition)
        cursor.execute("VACUUM ANALYZE inventory_client")
        cursor.execute("ANALYZE")


BASELINE_SQL = f"""
WITH moved AS (
    UPDATE inventory_client SET state = 'expired', state_changed_at = now(), ended_at = now()
    WHERE state = 'active' AND expires_at < {NOW_SQL}
    RETURNING id, registration_id, idp_id
), numbered AS (
    SELECT m.*, row_number() OVER () AS n FROM moved m
), audit AS (
    INSERT INTO portal_auditevent (id, occurred_at, actor_type, actor_id, actor_label, action, object_type,
                                   object_id, before, after, reason, request_id, prev_hash, hash)
    SELECT n, now(), 'system', '', 'baseline', 'client.expired', 'client', registration_id,
           '{{"state": "active"}}'::jsonb, '{{"state": "expired"}}'::jsonb, 'expires_at passed', '',
           repeat('0', 64), encode(sha256(convert_to(registration_id, 'UTF8')), 'hex')
    FROM numbered
)
INSERT INTO inventory_outboxentry (client_id, idp_id, operation, status, attempts, next_attempt_at,
                                   last_error, created_at@EXTRA_COLUMNS@)
SELECT id, idp_id, 'disable', 'pending', 0, now(), '', now()@EXTRA_VALUES@ FROM numbered
"""


def run_baseline(url: str) -> tuple[int, float]:
    import psycopg

    with psycopg.connect(url) as conn:
        # NOT NULL text columns other branches add to the outbox (e.g. claimed_by) get '' like Django would.
        extra = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'inventory_outboxentry' "
                "AND is_nullable = 'NO' AND column_default IS NULL AND data_type IN ('character varying', 'text') "
                "AND column_name NOT IN ('operation', 'status', 'last_error')"
            )
        ]
        sql = BASELINE_SQL.replace("@EXTRA_COLUMNS@", "".join(f", {c}" for c in extra)).replace(
            "@EXTRA_VALUES@", ", ''" * len(extra)
        )
        started = time.perf_counter()
        cursor = conn.execute(sql)
        conn.commit()
        elapsed = time.perf_counter() - started
        return cursor.rowcount, elapsed


def worker(url: str, batch_size: int) -> None:
    """The sweep as a worker runs it (own process, so its peak RSS is measured on its own)."""
    _django(url)
    from inventory.sweeps import sweep_expired

    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    started = time.perf_counter()
    result = sweep_expired(now=now, batch_size=batch_size)
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "expired": result.counts.get("expired", 0),
                "seconds": elapsed,
                "peak_rss_mb": peak_kb / 1024,
                "batches": result.batches,
            }
        )
    )


def verify(url: str, due: int) -> str:
    _django(url)
    from django.db.models import Count

    from inventory.models import Client, OutboxEntry
    from portal.audit import verify_chain
    from portal.models import AuditEvent

    problems = []
    if Client.objects.filter(state="expired").count() != due:
        problems.append("expired count != due")
    if AuditEvent.objects.filter(action="client.expired").count() != due:
        problems.append("audit events != due")
    if OutboxEntry.objects.values("client_id").annotate(n=Count("id")).filter(n__gt=1).exists():
        problems.append("duplicate outbox rows")
    if OutboxEntry.objects.count() != due:
        problems.append("outbox rows != due")
    checked, broken = verify_chain()
    if broken:
        problems.append(f"audit chain broken at {broken.event_id}")
    return "OK" if not problems else "; ".join(problems)


def count_deltas(url: str) -> int:
    """Count-delta rows the client table's trigger wrote (the build loads without it, so all come from the run):
    a -1 and a +1 per moved client when it fired."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM inventory_clientcountdelta").fetchone()
        return int(row[0]) if row else 0


def _child(args: list[str]) -> str:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--role", choices=["main", "build", "worker", "verify"], default="main")
    parser.add_argument("--url", default="")
    parser.add_argument("--keep-source", action="store_true", help="keep <name>_src for a later --reuse-source run")
    parser.add_argument(
        "--reuse-source", action="store_true", help="skip the build: copy the <name>_src a --keep-source run left"
    )
    args = parser.parse_args()
    if args.role == "build":
        build_source(args.url, args.clients, args.due)
        return 0
    if args.role == "worker":
        worker(args.url, args.batch_size)
        return 0
    if args.role == "verify":
        print(verify(args.url, args.due))
        return 0

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith("postgres"):
        print("set DATABASE_URL to a PostgreSQL server (the database name is used as a prefix)", file=sys.stderr)
        return 2
    prefix = urlsplit(base_url).path.lstrip("/") or "registrar_bench"
    src, copy_a, copy_b = f"{prefix}_src", f"{prefix}_base", f"{prefix}_sweep"
    for name in (copy_a, copy_b) if args.reuse_source else (copy_a, copy_b, src):
        _admin(base_url, f'DROP DATABASE IF EXISTS "{name}"')
    build_s = 0.0
    if not args.reuse_source:
        _admin(base_url, f'CREATE DATABASE "{src}"')
        t0 = time.perf_counter()
        _child(
            [
                *("--role", "build", "--url", _with_db(base_url, src)),
                *("--clients", str(args.clients), "--due", str(args.due)),
            ]
        )
        build_s = time.perf_counter() - t0
    # The baseline's copy is a file-level clone (FILE_COPY: no WAL for every page). Unless the source is kept
    # for another run, the source itself becomes the sweep's database: 10M clients on disk twice, not three times.
    t1 = time.perf_counter()
    _admin(base_url, f'CREATE DATABASE "{copy_a}" TEMPLATE "{src}" STRATEGY FILE_COPY')
    if args.keep_source or args.reuse_source:
        _admin(base_url, f'CREATE DATABASE "{copy_b}" TEMPLATE "{src}" STRATEGY FILE_COPY')
    else:
        _admin(base_url, f'ALTER DATABASE "{src}" RENAME TO "{copy_b}"')
    clone_s = time.perf_counter() - t1

    moved, baseline_s = run_baseline(_with_db(base_url, copy_a))
    report = json.loads(
        _child(["--role", "worker", "--url", _with_db(base_url, copy_b), "--batch-size", str(args.batch_size)])
    )
    check = _child(["--role", "verify", "--url", _with_db(base_url, copy_b), "--due", str(args.due)])
    deltas_a, deltas_b = (count_deltas(_with_db(base_url, name)) for name in (copy_a, copy_b))
    for name in (copy_a, copy_b) if args.keep_source or args.reuse_source else (copy_a, copy_b, src):
        _admin(base_url, f'DROP DATABASE IF EXISTS "{name}"')

    rate = report["expired"] / report["seconds"]
    baseline_rate = moved / baseline_s
    ratio = rate / baseline_rate
    ok = rate >= GOAL_RATE and ratio >= GOAL_RATIO and report["peak_rss_mb"] <= GOAL_RSS_MB and check == "OK"
    line = (
        f"sweep_expired: {args.clients:,} clients, {args.due:,} due, batch {args.batch_size}: "
        f"{rate:,.0f} clients/s ({report['expired']:,} in {report['seconds']:.1f} s, {report['batches']} batches); "
        f"raw SQL UPDATE+INSERT baseline {baseline_rate:,.0f} rows/s ({moved:,} in {baseline_s:.1f} s); "
        f"ratio {ratio:.2f}; worker peak RSS {report['peak_rss_mb']:.0f} MB; check {check}; "
        f"goals ≥{GOAL_RATE:,.0f}/s, ≥{GOAL_RATIO}, ≤{GOAL_RSS_MB:.0f} MB {'MET' if ok else 'NOT MET'}; "
        f"client count trigger fired in both (count deltas written: baseline {deltas_a:,}, sweep {deltas_b:,}); "
        f"data build {build_s:.0f} s{' (reused)' if args.reuse_source else ''} + copy {clone_s:.0f} s; Python {platform.python_version()}"
    )
    print(line)
    if not RESULTS.exists():
        RESULTS.write_text(HEADER, encoding="utf-8")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(f"- {stamp} {line}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
