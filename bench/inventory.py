"""Inventory, dashboard and framework-report speed over HTTP (gunicorn on loopback) vs raw SQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/registrar_bench \\
        python bench/inventory.py --seed 1000000      # creates + migrates the database if needed, seed_scale
                                                      # (timed), then measure
    python bench/inventory.py --no-seed               # measure what is already loaded
    make bench-scale                                  # 10M clients in registrar_scale: seeded once, then reused

For each scenario the SQL statements the view runs are captured once in-process, then timed on a raw
psycopg connection (the baseline: the same queries with no Django, no HTTP); the HTTP time is measured
against gunicorn over keep-alive loopback. Prints p50/p95 per scenario, the HTTP/raw ratio, checks the
issue's budgets, and appends one line to bench/RESULTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ is sys.path[0]: keep it off the import path so no script there can shadow a module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from importlib import import_module

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 40)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# DEBUG off serves hashed static files, as in production: collected here (main) before any page renders.
os.environ.setdefault("STATIC_ROOT", str(Path(tempfile.gettempdir()) / "registrar-bench-static"))
# bench-only audit log key (seed_scale seals the events it loads); its private half is public here
os.environ.setdefault(
    "REGISTRAR_LOG_SIGNING_KEY",
    "PRIVATE+KEY+registrar.test/audit-log+23489aee+AbLUkPGT8NXxl453Z+fncnV6KVajDSg9Yz0HcvL1aSS4",
)
if "REGISTRAR_ENCRYPTION_KEY" not in os.environ:
    from cryptography.fernet import Fernet

    os.environ["REGISTRAR_ENCRYPTION_KEY"] = Fernet.generate_key().decode()


def ensure_database() -> None:
    """Create DATABASE_URL's database when it does not exist yet (main() migrates it): a fresh machine needs no
    manual step."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return  # main() refuses anything but PostgreSQL
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


ensure_database()

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client as DjangoClient  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from inventory.models import Client, Team  # noqa: E402
from inventory.reports.audit_log import audit_chain_refresh  # noqa: E402
from portal.models import User  # noqa: E402

TYPO_TERMS = [
    "invoce",
    "triag",
    "billng",
    "suport",
    "compliance",
    "forcast",
    "reconciler",
    "payrol",
    "incidnt",
    "scheduler",
]
BUDGETS_MS = {
    "search": 100,
    "first_page": 50,
    "dashboard": 500,
    "report": 1000,
    "dashboard_cold": 500,
    "report_cold": 1000,
    "team_dashboard_cold": 500,
}  # p95 for search, p50 others
SNAPSHOT_KEYS = ["registrar:report:dashboard", "registrar:report:frameworks"]


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_user():
    """A security person and a session of theirs whose login used a second factor (portal.mfa requires one for
    the role), as allauth records it: the pages answer 200, not the redirect to two-factor set-up."""
    from allauth.mfa.models import Authenticator

    user, _ = User.objects.get_or_create(username="bench-ciso", defaults={"email": "bench@example.com"})
    user.groups.add(Group.objects.get(name="security"))
    totp, _ = Authenticator.objects.get_or_create(
        user=user, type=Authenticator.Type.TOTP, defaults={"data": {"secret": "BENCH"}}
    )
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session["account_authentication_methods"] = [
        {"method": "password", "at": time.time(), "username": user.username},
        {"method": "mfa", "at": time.time(), "id": totp.pk, "type": "totp"},
    ]
    session["account_authentication_methods_user"] = str(user.pk)
    session.create()
    return user, session.session_key


def captured_sql(session_key: str, url: str) -> list[tuple[str, tuple]]:
    """The statements the view runs for ``url`` (in-process, same code path as over HTTP)."""
    client = DjangoClient(HTTP_X_FORWARDED_PROTO="https")
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key  # bench_user()'s session, second factor and all
    client.get(url)  # warm: roles, audit checkpoint
    cache.delete_many(SNAPSHOT_KEYS)  # capture the real aggregates, not a cached snapshot
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    skip = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")
    return [(q["sql"], ()) for q in ctx.captured_queries if not q["sql"].startswith(skip)]


def time_raw(statements, repeat: int) -> list[float]:
    params = settings.DATABASES["default"]
    dsn = f"host={params['HOST']} port={params['PORT'] or 5432} dbname={params['NAME']} user={params['USER']}"
    if params.get("PASSWORD"):
        dsn += f" password={params['PASSWORD']}"
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET pg_trgm.word_similarity_threshold = 0.5")
        conn.execute("SET jit = off")  # as the app sets per connection (inventory.selectors)
        for _ in range(repeat):
            began = time.perf_counter()
            for sql, _params in statements:
                if sql.startswith("DECLARE "):  # Django's server-side cursor for .iterator(): run its SELECT
                    sql = sql.split(" CURSOR WITH HOLD FOR ", 1)[-1].split(" CURSOR FOR ", 1)[-1]
                cur = conn.execute(sql)
                if cur.description:
                    cur.fetchall()
            out.append((time.perf_counter() - began) * 1000)
    return out


def time_http(port: int, session_key: str, paths: list[str], repeat: int, cold: bool = False) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": f"sessionid={session_key}", "X-Forwarded-Proto": "https", "Host": "127.0.0.1"}
    out = []
    for i in range(repeat):
        path = paths[i % len(paths)]
        if cold:
            cache.delete_many(SNAPSHOT_KEYS)
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        out.append((time.perf_counter() - began) * 1000)
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status} for {path}: {body[:300]!r}")
    conn.close()
    return out


def start_gunicorn(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "1",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0, help="run seed_scale with this many clients first")
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument(
        "--seed-only", action="store_true", help="seed (timed), print the time and stop; measure later with --no-seed"
    )
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios to measure (default all), e.g. search,first_page"
    )
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("bench/inventory.py needs DATABASE_URL pointing at PostgreSQL")
    call_command("migrate", interactive=False, verbosity=0)  # a fresh database, or one behind the code
    call_command("collectstatic", interactive=False, verbosity=0)
    seed_s = None
    loaded = Client.objects.count() if args.seed and not args.no_seed else 0
    if loaded >= args.seed > 0:  # seeds or reuses: a database already holding the clients is measured as it is
        print(f"reusing the {loaded:,} clients already loaded (drop the database to seed again)")
        args.no_seed = True
    if args.seed and not args.no_seed:
        began = time.monotonic()
        call_command("seed_scale", clients=args.seed)
        seed_s = time.monotonic() - began
    if args.seed_only:
        if seed_s is not None:
            print(f"seed_scale {args.seed:,} clients: {seed_s:.0f}s")
        return
    total = Client.objects.count()
    user, session_key = bench_user()
    began = time.monotonic()
    chain = audit_chain_refresh()
    verify_s = time.monotonic() - began
    print(
        f"clients: {total:,}; audit chain verified once ({chain['checked']:,} events, {verify_s:.1f}s), "
        "then incrementally per report"
    )

    scenarios = {
        "search": [f"/inventory/?q={t}&state=active&tier=high" for t in TYPO_TERMS],
        "first_page": ["/inventory/"],
        "dashboard": ["/dashboards/"],
        "report": ["/reports/frameworks/"],
        "dashboard_cold": ["/dashboards/"],  # snapshot cache emptied before every request
        "report_cold": ["/reports/frameworks/"],
        # a team's own dashboard has no snapshot: every request reads the counts (the first team, as large as any)
        "team_dashboard_cold": [f"/dashboards/teams/{Team.objects.order_by('pk').values_list('slug', flat=True)[0]}/"],
    }
    if args.only:
        wanted = set(args.only.split(","))
        if unknown := wanted - set(scenarios):
            raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {sorted(scenarios)}")
        scenarios = {name: paths for name, paths in scenarios.items() if name in wanted}
    port = free_port()
    proc = start_gunicorn(port)
    results = {}
    try:
        for name, paths in scenarios.items():
            repeat = args.repeat if name in ("search", "first_page") else max(10, args.repeat // 4)
            statements = [captured_sql(session_key, p) for p in paths]
            raw = []
            for stmts in statements:
                raw += time_raw(stmts, max(3, repeat // len(paths)))
            cold = name.endswith("_cold")
            time_http(port, session_key, paths, len(paths) * 2)  # warm the workers
            http_ms = time_http(port, session_key, paths, repeat, cold=cold)
            results[name] = {
                "queries": len(statements[0]),
                "http_p50": statistics.median(http_ms),
                "http_p95": pct(http_ms, 0.95),
                "raw_p50": statistics.median(raw),
                "raw_p95": pct(raw, 0.95),
            }
    finally:
        proc.terminate()
        proc.wait(10)

    lines = []
    for name, r in results.items():
        ratio = r["http_p50"] / r["raw_p50"] if r["raw_p50"] else float("nan")
        measured = r["http_p95"] if name == "search" else r["http_p50"]
        verdict = "OK" if measured <= BUDGETS_MS[name] else "OVER"
        line = (
            f"{name}: HTTP p50 {r['http_p50']:.1f} ms p95 {r['http_p95']:.1f} ms; raw SQL p50 {r['raw_p50']:.1f} ms "
            f"({r['queries']} queries); ratio {ratio:.1f}x; budget {BUDGETS_MS[name]} ms "
            f"({'p95' if name == 'search' else 'p50'}) {verdict}"
        )
        print(line)
        lines.append(line)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = "; ".join(
        f"{n} {r['http_p50']:.0f}/{r['http_p95']:.0f} ms (raw {r['raw_p50']:.0f} ms, "
        f"{r['http_p50'] / r['raw_p50']:.1f}x)"
        for n, r in results.items()
    )
    seeded = f", seed_scale {seed_s:.0f}s" if seed_s is not None else ""
    entry = (
        f"- {stamp} inventory at {total:,} clients{seeded}: HTTP p50/p95 — {summary}; gunicorn 2 workers, "
        f"PostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} CPUs\n"
    )
    results_md = ROOT / "bench" / "RESULTS.md"
    if not results_md.exists():
        results_md.write_text(
            "# Benchmark results\n\nOne line per run, appended by the scripts in bench/. Ratios "
            "compare against a baseline measured in the\nsame run; absolute times depend on the "
            "machine.\n\n"
        )
    with results_md.open("a") as fh:
        fh.write(entry)
    print(entry.strip())


if __name__ == "__main__":
    main()
