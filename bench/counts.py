"""What the counts cost the intake, and what they save the dashboard.

    .venv/bin/python bench/counts.py intake [--requests 150] [--rounds 4]
    DATABASE_URL=postgres://…/registrar_bench python bench/counts.py dashboard [--repeat 10]

``intake``: the 201 path (``POST /oauth2/register``, auto-approved: the client is created, delivered inline to the
dry-run IdP and activated — two client writes, so three count deltas) through Django's WSGI handler in this
process, against the database bench/intake.py prepares, with the client table's count triggers enabled and
disabled in turn (``--rounds`` times, alternating which goes first), the same requests each time. Prints the
median milliseconds per registration of each and their ratio (the process waits for PostgreSQL, so the
triggers' work is inside the figure). bench/intake.py's HTTP paths (202/400/401) create no client, so they
cannot show the triggers; bench/intake_cpu.py counts this process's instructions only, not PostgreSQL's.

``dashboard``: on a seeded database (``manage.py seed_scale``), the dashboard's data cold (no snapshot) from the
counts, its query count, and beside each part read from the counts the raw SQL over the client or request table
it replaced, in the same run: the live figures (``GROUP BY`` over the clients), registrations per day by outcome
and time to decision (the 90 days of requests, ``percentile_cont``), the expiry overshoot p99 (``percentile_cont``
over the expired clients).

Both append one line to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

# (table, trigger): the clients' count triggers and the registration requests' (approvals.counts)
TRIGGERS = (
    ("inventory_client", "client_count_delta"),
    ("inventory_client", "client_count_delta_update"),
    ("approvals_registrationrequest", "request_count_delta"),
    ("approvals_registrationrequest", "request_count_delta_update"),
)
TRIGGER_FUNCTIONS = ("registrar_client_count_delta", "registrar_request_count_delta")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _triggers(cursor, enabled: bool) -> None:
    for table, name in TRIGGERS:
        cursor.execute(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {name}")


def intake(args) -> str:
    bench = _module("intake")
    print(f"preparing database {bench.DB_NAME} ...", flush=True)
    bench.recreate_database()
    bench.seed()
    os.environ.update(bench.server_env())
    import django

    django.setup()
    from django.db import connection

    call = _module("intake_cpu")._wsgi_call(bench, "intake 201")
    for _ in range(30):
        call()
    with connection.cursor() as cursor:
        cursor.execute("SET track_functions = 'pl'")  # time spent inside the trigger function, measured by PostgreSQL
        trigger_ms_before = _trigger_ms(cursor)
    per_mode: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for enabled in (True, False) if round_ % 2 == 0 else (False, True):
            with connection.cursor() as cursor:
                _triggers(cursor, enabled)
            began = time.perf_counter()
            for _ in range(args.requests):
                call()
            per_mode[enabled].append((time.perf_counter() - began) * 1000 / args.requests)
            print(
                f"round {round_ + 1} triggers {'on ' if enabled else 'off'}: {per_mode[enabled][-1]:.2f} ms", flush=True
            )
    with connection.cursor() as cursor:
        _triggers(cursor, True)
        trigger_ms = _trigger_ms(cursor) - trigger_ms_before
        cursor.execute(
            "SELECT (SELECT count(*) FROM inventory_clientcountdelta) + (SELECT count(*) FROM approvals_requestcountdelta)"
        )
        deltas = cursor.fetchone()[0]
    on, off = statistics.median(per_mode[True]), statistics.median(per_mode[False])
    registrations_on = args.requests * args.rounds
    in_trigger = trigger_ms / registrations_on
    return (
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC counts intake (201 path in-process, {args.requests} requests × "
        f"{args.rounds} rounds each way, {os.cpu_count()} cores): count triggers on {on:.2f} ms/registration, "
        f"off {off:.2f} ms → ratio {on / off:.3f} (wall clock, noisy); PostgreSQL's own time inside the trigger "
        f"{in_trigger:.3f} ms/registration = {100 * in_trigger / off:.2f} % of a registration "
        f"({deltas} deltas written while on)"
    )


def _trigger_ms(cursor) -> float:
    cursor.execute("SELECT pg_stat_force_next_flush()")
    cursor.execute(
        "SELECT COALESCE(sum(total_time), 0) FROM pg_stat_user_functions WHERE funcname = ANY(%s)",
        [list(TRIGGER_FUNCTIONS)],
    )
    return float(cursor.fetchone()[0])


def dashboard(args) -> str:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from approvals.inventory_hooks import registration_stats
    from approvals.models import RegistrationRequest
    from inventory.counts import counts_fold
    from inventory.histograms import histogram_percentile
    from inventory.models import Client, Team
    from inventory.selectors.counts import overshoot_histogram
    from inventory.selectors.dashboard import dashboard_data, live_breakdown, live_breakdown_raw

    counts_fold()
    clients = Client.objects.count()
    requests = RegistrationRequest.objects.count()
    team = Team.objects.order_by("pk").first()

    def timed(fn) -> tuple[float, int]:
        runs, queries = [], 0
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                fn()
                runs.append((time.perf_counter() - began) * 1000)
            queries = len(captured)
        return statistics.median(runs), queries

    now = timezone.now()
    start = now - timedelta(days=90)

    def raw(sql: str, params: list):
        def run():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()

        return run

    figures = {
        "dashboard": timed(dashboard_data),
        "team dashboard": timed(lambda: dashboard_data(team=team)),
        "live figures from the counts": timed(lambda: live_breakdown(now)),
        "live figures, raw GROUP BY": timed(lambda: live_breakdown_raw(now)),
        "registration stats from the counts": timed(lambda: registration_stats(start, None)),
        "registration stats, raw SQL": timed(lambda: (raw(RAW_PER_DAY, [start])(), raw(RAW_DECISION, [start])())),
        "overshoot p99 from the counts": timed(lambda: histogram_percentile(overshoot_histogram(), 0.99)),
        "overshoot p99, raw percentile_cont": timed(raw(RAW_OVERSHOOT, [])),
    }
    for name, (ms, queries) in figures.items():
        print(f"{name:36s} {ms:8.1f} ms  {queries} queries", flush=True)
    ratios = {
        what: figures[f"{what}, {base}"][0] / max(figures[f"{what} from the counts"][0], 1e-3)
        for what, base in (
            ("live figures", "raw GROUP BY"),
            ("registration stats", "raw SQL"),
            ("overshoot p99", "raw percentile_cont"),
        )
    }
    return (
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC counts dashboard at {clients:,} clients, {requests:,} requests "
        f"(cold, in-process, median of {args.repeat}): "
        + "; ".join(f"{name} {ms:.1f} ms ({queries} queries)" for name, (ms, queries) in figures.items())
        + "; raw ÷ counts: "
        + ", ".join(f"{what} {ratio:.1f}×" for what, ratio in ratios.items())
    )


# What the counts replaced, as raw SQL (the baseline, same database, same run).
RAW_PER_DAY = (
    "SELECT date_trunc('day', created_at), state, outcome, count(*), sum(coalesced_count) "
    "FROM approvals_registrationrequest WHERE created_at >= %s GROUP BY 1, 2, 3"
)
RAW_DECISION = (
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (decided_at - created_at))), "
    "percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (decided_at - created_at))) "
    "FROM approvals_registrationrequest WHERE decided_at >= %s AND state IN ('approved', 'denied') "
    "AND outcome <> 'auto_approve'"
)
RAW_OVERSHOOT = (
    "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY expiry_overshoot_seconds) FROM inventory_client "
    "WHERE expiry_overshoot_seconds IS NOT NULL"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("intake", "dashboard"))
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    line = intake(args) if args.what == "intake" else dashboard(args)
    print(line)
    with (BENCH / "RESULTS.md").open("a") as fh:
        fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
