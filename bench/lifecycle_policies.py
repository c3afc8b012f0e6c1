"""Benchmark the lifecycle policies: the what-if preview, one enforcement pass, and usage ingestion.

Run from the repository root (PostgreSQL required; the database is dropped and rebuilt)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/registrar_bench python bench/lifecycle_policies.py \
        [--clients 1000000] [--acted 20000] [--events 100000]

In one run:

1. migrates a fresh database and fills it server-side (``generate_series`` from one template row): ``--clients``
   active clients over 100 owners and 10 teams, tiers 10 % high / 30 % medium / 60 % low, created over the
   last 400 days; ``--acted`` of them (high tier, created 60 days ago, low/medium far younger) are the ones the
   attestation rule flags;
2. **preview**: ``preview()`` of the default rules vs raw SQL computing the same counts (per rule, per owner,
   per team; one statement per rule) in the same run — goal ≤ 2 s and ratio ≤ 3×. The raw sponsors statement
   counts co-sponsors only where the owner alone does not meet the tier's minimum, as ``preview`` does; the
   line also gives the raw SQL first used here, which runs that count for every active client;
3. **enforcement**: ``flag_issues`` then ``enforce`` (attestation → suspend under a policy hold) past the grace,
   clients acted on per second — goal ≥ 2,000/s; checks that the number acted on equals the preview's;
4. **usage ingestion**: ``--events`` reports in batches of 5,000 through ``parse_usage_batch`` + ``usage_ingest``
   vs a raw ``COPY`` into a temporary table + one ``UPDATE … FROM`` — goal ratio ≥ 0.25.

Prints the figures and appends a line to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "RESULTS.md"
BATCH = 5000


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdef-not-for-production")
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("REGISTRAR_ENCRYPTION_KEY", "YmVuY2gtb25seS1rZXktMDEyMzQ1Njc4OWFiY2RlZmc=")  # bench-only
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
    import django

    django.setup()


def _recreate(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def build(clients: int, acted: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from inventory.choices import IdPKind
    from inventory.models import Client, IdPConnection, Team
    from portal.models import User

    call_command("migrate", verbosity=0)
    owners = [User(username=f"owner{i:03d}", email=f"o{i}@example.com") for i in range(100)]
    User.objects.bulk_create(owners)
    owner_ids = list(User.objects.filter(username__startswith="owner").order_by("id").values_list("id", flat=True))
    teams = Team.objects.bulk_create([Team(name=f"Team {i}", slug=f"team-{i}") for i in range(10)])
    idp = IdPConnection.objects.create(name="bench-idp", kind=IdPKind.DRY_RUN, is_default=True)
    template = Client.objects.create(
        registration_id="reg_template", idp=idp, name="template", owner_id=owner_ids[0], state="active"
    )
    columns = [f.column for f in Client._meta.concrete_fields if f.column != "id"]
    first_owner, first_team = owner_ids[0], teams[0].pk
    overrides = {
        "registration_id": "'reg_b' || lpad(g::text, 9, '0')",
        "idp_client_id": "'bench-' || g::text",
        "name": "'agent-' || g::text",
        "owner_id": f"{first_owner} + g %% 100",
        "team_id": f"{first_team} + g %% 10",
        # g <= acted: high tier, 60 days old (attestation due after 30); the rest young enough for their tier.
        "risk_tier": f"CASE WHEN g <= {acted} THEN 'high' WHEN g %% 10 < 3 THEN 'medium' "
        "WHEN g %% 10 < 4 THEN 'high' ELSE 'low' END",
        "created_at": f"CASE WHEN g <= {acted} THEN now() - INTERVAL '60 days' "
        "ELSE now() - (g %% 20) * INTERVAL '1 day' END",
        "activated_at": f"CASE WHEN g <= {acted} THEN now() - INTERVAL '60 days' "
        "ELSE now() - (g %% 20) * INTERVAL '1 day' END",
        "last_used_at": "now() - (g %% 30) * INTERVAL '1 day'",
        "expires_at": "now() + INTERVAL '300 days'",
    }
    select = ", ".join(overrides.get(col, f"t.{col}") for col in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO inventory_client ({', '.join(columns)}) "  # noqa: S608 - bench, fixed SQL
            f"SELECT {select} FROM inventory_client t, generate_series(1, %s) g WHERE t.id = %s",
            [clients, template.pk],
        )
        cursor.execute("DELETE FROM inventory_client WHERE id = %s", [template.pk])
        cursor.execute("ANALYZE")


RAW_PREVIEW = """
SELECT o.username, t.slug, count(*) FROM inventory_client c
  LEFT JOIN portal_user o ON o.id = c.owner_id LEFT JOIN inventory_team t ON t.id = c.team_id
 WHERE c.state = 'active' AND c.managed AND ({cond})
 GROUP BY GROUPING SETS ((o.username), (t.slug))
"""
ATTESTATION_COND = (
    "(c.risk_tier = 'high' AND COALESCE(c.attested_at, c.activated_at, c.created_at) < now() - INTERVAL '30 days') OR "
    "(c.risk_tier = 'medium' AND COALESCE(c.attested_at, c.activated_at, c.created_at) < now() - INTERVAL '90 days') OR "
    "(c.risk_tier = 'low' AND COALESCE(c.attested_at, c.activated_at, c.created_at) < now() - INTERVAL '180 days')"
)
INACTIVITY_COND = "COALESCE(c.last_used_at, c.activated_at, c.created_at) < now() - INTERVAL '90 days'"
# Sponsors still needed = the tier's minimum - 1 for an active owner; co-sponsors are counted only where some are
# still needed (with the default minimum of 1 and an active owner, none: the subquery is skipped).
STILL_NEEDED = "(CASE c.risk_tier WHEN 'high' THEN 2 ELSE 1 END - CASE WHEN o.is_active THEN 1 ELSE 0 END)"
SPONSORS_COND = (
    f"{STILL_NEEDED} > 0 AND (SELECT count(*) FROM inventory_clientsponsor s JOIN portal_user u "
    f"ON u.id = s.user_id WHERE s.client_id = c.id AND s.state = 'active' AND u.is_active) < {STILL_NEEDED}"
)
# The same count as first written: the subquery runs for every active client.
SPONSORS_COND_PER_CLIENT = (
    "(CASE WHEN o.is_active THEN 1 ELSE 0 END + (SELECT count(*) FROM inventory_clientsponsor s JOIN portal_user u "
    "ON u.id = s.user_id WHERE s.client_id = c.id AND s.state = 'active' AND u.is_active)) < "
    "CASE c.risk_tier WHEN 'high' THEN 2 ELSE 1 END"
)


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--acted", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/registrar_bench")
    load_at_start = os.getloadavg()[0]
    _recreate(url)
    _django(url)
    start = time.perf_counter()
    build(args.clients, args.acted)
    build_s = time.perf_counter() - start

    from django.db import connection
    from django.utils import timezone

    from inventory.lifecycle_policies import enforce, flag_issues, parse_rules, preview
    from inventory.usage import parse_usage_batch, usage_ingest
    from portal.audit import Actor

    rules = parse_rules({"attestation": {"action": "suspend", "grace_days": 0}}, version=1)
    preview_s, what_if = _timed(lambda: preview(rules))

    def raw():
        with connection.cursor() as cursor:
            for cond in (ATTESTATION_COND, INACTIVITY_COND, SPONSORS_COND):
                cursor.execute(RAW_PREVIEW.format(cond=cond))  # noqa: S608 - bench, fixed SQL
                cursor.fetchall()

    raw_s, _ = _timed(raw)

    def raw_per_client():
        with connection.cursor() as cursor:
            for cond in (ATTESTATION_COND, INACTIVITY_COND, SPONSORS_COND_PER_CLIENT):
                cursor.execute(RAW_PREVIEW.format(cond=cond))  # noqa: S608 - bench, fixed SQL
                cursor.fetchall()

    raw_per_client_s, _ = _timed(raw_per_client, repeat=1)
    flagged = {r.rule: r.flagged for r in what_if.rules}

    # Enforcement: attestation only (the other rules' grace is 14 days), acted on at once (grace 0).
    enforce_rules = parse_rules(
        {
            "attestation": {"action": "suspend", "grace_days": 0},
            "inactivity": {"enabled": False},
            "sponsors": {"enabled": False},
        },
        version=1,
    )
    now = timezone.now()
    start = time.perf_counter()
    flag_issues(enforce_rules, now=now)
    flag_s = time.perf_counter() - start
    start = time.perf_counter()
    acted = enforce(enforce_rules, now=now + dt.timedelta(seconds=1)).total
    enforce_s = time.perf_counter() - start
    check = "OK" if acted == flagged["attestation"] else f"MISMATCH acted {acted} != preview {flagged['attestation']}"

    # Usage ingestion vs COPY + UPDATE.
    stamp = timezone.now()
    events = [
        {"idp": "bench-idp", "client_id": f"bench-{1 + (i * 7919) % args.clients}", "last_used_at": stamp.isoformat()}
        for i in range(args.events)
    ]
    start = time.perf_counter()
    for offset in range(0, len(events), BATCH):
        usage_ingest(parse_usage_batch(events[offset : offset + BATCH]), actor=Actor.system("bench"), source="bench")
    ingest_s = time.perf_counter() - start
    later = (stamp + dt.timedelta(seconds=1)).isoformat()
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE u (client_id text, used_at timestamptz)")
        with cursor.copy("COPY u (client_id, used_at) FROM STDIN") as copy:
            for event in events:
                copy.write_row((event["client_id"], later))
        cursor.execute(
            "UPDATE inventory_client c SET last_used_at = u.used_at FROM (SELECT client_id, max(used_at) used_at "
            "FROM u GROUP BY client_id) u WHERE c.idp_client_id = u.client_id AND c.last_used_at < u.used_at"
        )
    raw_ingest_s = time.perf_counter() - start

    line = (
        f"- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC lifecycle policies at {args.clients:,} clients: "
        f"preview {preview_s * 1000:.0f} ms (raw SQL {raw_s * 1000:.0f} ms, {preview_s / raw_s:.1f}x; raw SQL with "
        f"the sponsors count per client {raw_per_client_s * 1000:.0f} ms; flagged "
        f"{flagged}); goal ≤ 2 s and ≤ 3x {'MET' if preview_s <= 2 and preview_s / raw_s <= 3 else 'NOT MET'}; "
        f"flag pass {flag_s:.1f} s; enforcement {acted:,} acted in {enforce_s:.1f} s = {acted / enforce_s:,.0f}/s "
        f"(goal ≥ 2,000/s {'MET' if acted / enforce_s >= 2000 else 'NOT MET'}), what-if = enforcement {check}; "
        f"usage {args.events:,} events {args.events / ingest_s:,.0f}/s vs COPY+UPDATE {args.events / raw_ingest_s:,.0f}/s, "
        f"ratio {raw_ingest_s / ingest_s:.2f} (goal ≥ 0.25 {'MET' if raw_ingest_s / ingest_s >= 0.25 else 'NOT MET'}); "
        f"data build {build_s:.0f} s; load average {load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        f"({os.cpu_count()} CPUs); Python {platform.python_version()}"
    )
    print(line)
    with RESULTS.open("a") as results:
        results.write(line + "\n")
    return 0 if check == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
