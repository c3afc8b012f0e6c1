"""Registration intake throughput: the production stack on loopback vs. two baselines measured in the same run.

    .venv/bin/python bench/intake.py [--duration 10] [--connections 8] [--workers 3] [--no-idp]
                                     [--server gunicorn,granian] [--rounds 3]

What runs:

1. A fresh PostgreSQL database (``registrar_bench_intake``), migrated, with the test catalogue, a dry-run IdP,
   one owner and an initial access token with (practically) unlimited uses.
2. The WSGI server (``--server``: gunicorn with contrib/gunicorn.conf.py, or granian's WSGI interface; several
   comma-separated are measured one after the other, ``--rounds`` times interleaved) with ``--workers``
   processes, DEBUG off, Redis cache so the rate limiter does its round trip (the limits are set high enough
   never to trigger), on 127.0.0.1.
3. ``wrk`` (Debian package; a C load generator that leaves the cores to the server) with a Lua script POSTing
   the same JSON body over ``--connections`` connections for ``--duration`` seconds, twice:
   - the 202 path: a medium-risk registration (``tickets:write``) → pending request + token use + audit event;
   - the 400 path: an unknown scope → refused request + audit event;
   - the anonymous path: an MCP client with no credential under the anonymous profile (coalescing off) → a new
     pending request + audit event each time;
   - the coalesced path: the same registration again with coalescing on → the live request handed out with a
     fresh registration access token + one ``registration.coalesced`` audit event (should cost no more than new);
   - the 401 path: an unknown initial access token → one refused-credential tally upsert (no audit append);
   - the 202 path again while a second wrk floods the 401 path: what garbage traffic costs real work.
4. Baseline A, raw psycopg: ``--connections`` threads, one connection each, writing the 202 path's rows the
   way the intake writes them (token use, request INSERT, audit event INSERT: one prepared statement, one
   transaction per registration), for the same duration.
5. Baseline B, the oidc-provider test IdP's own registration endpoint (in-memory, ungoverned) under the
   same wrk load, unless ``--no-idp`` or Node.js is missing.

Prints ``intake_rps`` and the server's CPU milliseconds per request (its processes' user + system time over
the run, divided by the requests: the steadier figure on a shared machine) for both paths, the baselines and
the ratios, and appends one line per server to
bench/RESULTS.md (all against the same baselines).
Row counts are checked after each run, so a fast stream of errors cannot pass for throughput (the 401 path:
every answer must be counted in ``approvals_unauthorizedtally``). The 401 path and the 202 path under a 401
flood are measured on every server too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ is sys.path[0]: keep it off the import path so no script there can shadow a module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_DATABASE_NAME", "registrar_bench_intake")
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
TOKEN = "rat_bench_" + "x" * 32
TOKEN_201 = "rat_bench_" + "y" * 32  # bench/intake_cpu.py's 201 path: its own token, so targets never share a row
BENCH_LOG_KEY = "PRIVATE+KEY+registrar.test/audit-log+23489aee+AbLUkPGT8NXxl453Z+fncnV6KVajDSg9Yz0HcvL1aSS4"
RESULTS = ROOT / "bench" / "RESULTS.md"
VENV_BIN = Path(sys.executable).parent

JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "gV1J6obKVMtk6b-WBzqbYdKYHiQKHw4IcoqYh1ofjZE",
            "y": "LT-DhnSDk1z4LY6Q2_n8-SnN_q8yPSL_S7iUyB5dlhU",
        }
    ]
}
BODY_202 = {
    "client_name": "bench-agent",
    "purpose": "benchmark registrations",
    "scope": "tickets:write",
    "internal_only": True,
    "jwks": JWKS,
    "requested_ttl": 3600,
}
BODY_400 = dict(BODY_202, scope="nope:unknown")
# Low risk: auto-approved, so the client is created (and delivered to the dry-run IdP) in the request.
BODY_201 = dict(BODY_202, scope="tickets:read")
PROFILE_CACHE_SECONDS = 5.0  # approvals.oauth2.cache.CACHE_SECONDS (the servers keep the anonymous profile that long)
BAD_TOKEN = "rat_bench_wrong_" + "y" * 26
# An MCP client registering with no credential under the bench IdP's anonymous profile (docs/mcp.md); medium
# scope, so it waits for review like BODY_202 and the two paths differ only by the credential and coalescing.
BODY_ANON = {
    "client_name": "bench-mcp-client",
    "redirect_uris": ["http://127.0.0.1:33418/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "application_type": "native",
    "scope": "tickets:write",
}


def server_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DB_URL,
        "REDIS_URL": REDIS_URL,
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REGISTRAR_ENCRYPTION_KEY": "aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8tMTI=",
        "SECURE_SSL_REDIRECT": "false",
        "REGISTRAR_REGISTER_RATE_PER_TOKEN": "100000000/m",
        "REGISTRAR_REGISTER_RATE_PER_IP": "100000000/m",
        "LOG_LEVEL": "ERROR",  # a warning per 400 answer would measure the log, not the endpoint
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        # bench-only audit log key (its private half is public here); the sequencer is not running: intake
        # never waits for it (bench/audit_log.py measures the two together)
        "REGISTRAR_LOG_SIGNING_KEY": BENCH_LOG_KEY,
        "REGISTRAR_LOG_NUDGE": "false",
    }


# --- database ------------------------------------------------------------------------------------------


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=server_env(), check=True)


def seed() -> None:
    """Catalogue, default dry-run IdP, owner and token, written through Django (in this process)."""
    os.environ.update(server_env())
    import django

    django.setup()
    from datetime import timedelta

    from django.utils import timezone

    from approvals.models import InitialAccessToken, Policy
    from inventory.models import IdPConnection, ScopeDefinition
    from portal.crypto import hash_token
    from portal.models import User

    for name, sensitivity in (("tickets:read", "low"), ("tickets:write", "medium"), ("repo:write", "high")):
        ScopeDefinition.objects.create(name=name, sensitivity=sensitivity, category="internal_tool")
    IdPConnection.objects.create(
        name="bench-dry-run",
        kind="dry-run",
        is_default=True,
        config={"issuer": "https://idp.bench", "token_endpoint": "https://idp.bench/token"},
    )
    owner = User.objects.create_user("bench-owner", "bench@example.com", "x" * 20)
    # One owner registers every client of a run: lift its live-client quota so the 201 path never turns into 400.
    policy = Policy.objects.get(is_active=True)
    policy.thresholds = {**policy.thresholds, "max_live_clients_per_owner": 10**9}
    policy.save(update_fields=["thresholds"])
    from approvals.models import AnonymousProfile
    from inventory.models import Team

    AnonymousProfile.objects.create(
        idp=IdPConnection.objects.get(name="bench-dry-run"),
        name="bench",
        enabled=True,
        owner=owner,
        team=Team.objects.create(name="bench", slug="bench"),
        allowed_scopes=["tickets:read", "tickets:write"],
        max_live_clients=10**9,
        rate_per_software="",
        rate_per_profile="",
        coalesce=False,
    )
    for plaintext in (TOKEN, TOKEN_201):
        InitialAccessToken.objects.create(
            owner=owner,
            purpose="benchmark",
            prefix=plaintext[:12],
            token_hash=hash_token(plaintext),
            allowed_scopes=["tickets:read", "tickets:write"],
            max_ttl_seconds=86400,
            max_uses=2_000_000_000,
            expires_at=timezone.now() + timedelta(days=1),
        )


def count_requests() -> dict[str, int]:
    import psycopg

    with psycopg.connect(DB_URL) as conn:
        rows = conn.execute("SELECT state, count(*) FROM approvals_registrationrequest GROUP BY state").fetchall()
    return dict(rows)


def anonymous_counts(*, coalesce: bool | None = None) -> tuple[int, int]:
    """Anonymous requests and registrations coalesced into them; optionally switch the profile's coalescing."""
    import psycopg

    with psycopg.connect(DB_URL) as conn:
        if coalesce is not None:
            conn.execute("UPDATE approvals_anonymousprofile SET coalesce = %s", [coalesce])
        rows, coalesced = conn.execute(
            "SELECT count(*), coalesce(sum(coalesced_count), 0) FROM approvals_registrationrequest "
            "WHERE via = 'anonymous'"
        ).fetchone()
    return int(rows), int(coalesced)


def count_refused() -> int:
    """Refused credentials recorded so far: tallied (not yet folded) plus chained one by one."""
    import psycopg

    with psycopg.connect(DB_URL) as conn:
        chained = conn.execute(
            "SELECT count(*) FROM portal_auditevent WHERE action = 'registration.unauthorized'"
        ).fetchone()[0]
        exists = conn.execute("SELECT to_regclass('approvals_unauthorizedtally') IS NOT NULL").fetchone()[0]
        tallied = (
            conn.execute("SELECT coalesce(sum(count), 0) FROM approvals_unauthorizedtally").fetchone()[0]
            if exists
            else 0
        )
    return int(chained) + int(tallied)


# --- load generation ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback URL built here
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
{close}
wrk.body = {body}
"""
# --close: every request on a new connection, as from a reverse proxy without upstream keep-alive.
CLOSE_CONNECTIONS = False


def run_wrk(url: str, body: dict, *, bearer: str | None, duration: int, connections: int) -> dict[str, float]:
    auth = f'wrk.headers["Authorization"] = "Bearer {bearer}"' if bearer else ""
    close = 'wrk.headers["Connection"] = "close"' if CLOSE_CONNECTIONS else ""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA.format(auth=auth, close=close, body=json.dumps(json.dumps(body))))
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    return parse_wrk(out)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        result[key] = _ms(m.group(1), m.group(2))
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = errors.group(1) if errors else ""
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


# --- baseline A: raw psycopg transactions ---------------------------------------------------------------


RAW_COLUMNS = (
    "public_id, kind, state, via, metadata, client_name, software_id, purpose, requested_scopes, requested_ttl,"
    " granted_scopes, granted_ttl, audiences, internal_only, idp_id, owner_id, token_id, statement_subject,"
    " registration_access_token_hash, policy_version, risk_tier, outcome, reasons, verdict, approvals_needed, error,"
    " source_ip, created_at, decision_reason"
)
# The 202 path's rows as the intake writes them (approvals.oauth2.credential_use.insert_with_event): one statement per
# registration, in autocommit, prepared — token use, request INSERT, audit event INSERT (no log index: the
# audit log's sequencer places it later). Hand-written here with literal constants, so only the database's work
# is measured.
RAW_STATEMENT = f"""
WITH tok AS (UPDATE approvals_initialaccesstoken SET uses = uses + 1, last_used_at = now()
             WHERE id = %s AND uses < max_uses AND revoked_at IS NULL AND expires_at > now() RETURNING id),
 req AS (INSERT INTO approvals_registrationrequest ({RAW_COLUMNS})
         SELECT %s, 'registration', 'pending', 'token', %s::jsonb, 'bench-agent', '', 'benchmark', '["tickets:write"]',
                3600, '["tickets:write"]', 3600, '[]', true, %s, %s, tok.id, '', %s, 1, 'medium', 'review',
                '[{{"code": "medium_sensitivity_scope"}}]', %s::jsonb, 1, '', '127.0.0.1', now(), '' FROM tok
         RETURNING id)
INSERT INTO portal_auditevent (occurred_at, actor_type, actor_id, actor_label, action, object_type, object_id,
                               after, reason, policy_version, request_id, prev_hash)
SELECT now(), 'agent', %s, 'token rat_bench_x', 'registration.pending', 'registration_request',
       %s, %s::jsonb, '', 1, '', '' WHERE EXISTS (SELECT 1 FROM req)
RETURNING id"""


def raw_writer(conn) -> Callable[[], None]:
    """A function writing one 202-path registration on ``conn`` (autocommit) the way the intake does."""
    token_id, owner_id = conn.execute("SELECT id, owner_id FROM approvals_initialaccesstoken ORDER BY id").fetchone()
    idp_id = conn.execute("SELECT id FROM inventory_idpconnection").fetchone()[0]
    metadata = json.dumps(BODY_202)
    verdict = json.dumps({"tier": "medium", "outcome": "review", "reasons": [{"code": "medium_sensitivity_scope"}]})

    def write() -> None:
        public_id = "reg_" + uuid.uuid4().hex[:20]
        row = conn.execute(
            RAW_STATEMENT,
            (
                token_id,
                public_id,
                metadata,
                idp_id,
                owner_id,
                uuid.uuid4().hex + uuid.uuid4().hex,
                verdict,
                str(token_id),
                public_id,
                verdict,
            ),
        ).fetchone()
        if row is None:
            raise RuntimeError("raw baseline: the token ran out")

    return write


def raw_baseline(*, duration: int, connections: int) -> dict[str, float]:
    """The 202 path's rows, written with raw SQL the way the intake writes them, N threads."""
    import psycopg

    latencies: list[list[float]] = [[] for _ in range(connections)]
    stop = time.monotonic() + duration

    def worker(slot: int) -> None:
        with psycopg.connect(DB_URL, autocommit=True, prepare_threshold=0) as conn:
            write = raw_writer(conn)
            while time.monotonic() < stop:
                started = time.perf_counter()
                write()
                latencies[slot].append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    everything = sorted(x for per in latencies for x in per)
    return {
        "rps": len(everything) / elapsed,
        "requests": float(len(everything)),
        "p50_ms": statistics.median(everything),
        "p99_ms": everything[int(len(everything) * 0.99) - 1],
    }


def append_result(line: str) -> None:
    """Append one run's line to bench/RESULTS.md (creating it with its header) and print it."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nOne line per run, appended by the scripts in bench/.\n\n")
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")
    print(line)


# --- main ------------------------------------------------------------------------------------------------


SERVERS = ("gunicorn", "gunicorn-gthread", "granian")


def server_command(server: str, *, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """The command line and extra environment of one WSGI server on 127.0.0.1:``port``.

    gunicorn runs with the production configuration file (contrib/gunicorn.conf.py: its worker class, the
    structured logger, prometheus multiprocess files), so the figure is the one the deployment gets;
    ``gunicorn-gthread`` is the same with a one-thread gthread worker, which keeps connections alive. granian runs
    its WSGI interface with one blocking thread per worker process, the same concurrency as one gunicorn worker.
    """
    if server.startswith("gunicorn"):
        env = {
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_ACCESS_LOG": "true" if os.environ.get("BENCH_ACCESS_LOG") else "false",
        }
        if server == "gunicorn-gthread":  # one thread per worker, but keep-alive (a sync worker closes each connection)
            env |= {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "1"}
        return [
            str(VENV_BIN / "gunicorn"),
            "--config",
            str(ROOT / "contrib" / "gunicorn.conf.py"),
            "portal.wsgi:application",
        ], env
    if server == "granian":
        return [
            str(VENV_BIN / "granian"),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--blocking-threads",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            *(["--access-log"] if os.environ.get("BENCH_ACCESS_LOG") else []),
            "portal.wsgi:application",
        ], {}
    raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants, reaped ones included.

    Throughput on a shared 2-core VM moves with the neighbours; the server's own CPU per request moves much
    less, so it is what tells two servers apart.
    """
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is None:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of /proc/<pid>/stat (11-14 after the command name)
        total += sum(int(value) for value in fields[11:15]) / tick
        todo.extend(children.get(current, []))
    return total


def measure_server(server: str, args) -> dict[str, dict[str, float]]:
    """Start ``server``, warm it, run wrk on the 202 and 400 paths, check the rows, stop it."""
    port = free_port()
    command, extra_env = server_command(server, port=port, workers=args.workers)
    log = tempfile.NamedTemporaryFile("w", prefix=f"bench-intake-{server}-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"{server} log: {log.name}", flush=True)
    process = subprocess.Popen(command, cwd=ROOT, env={**server_env(), **extra_env}, stdout=log, stderr=log)
    results: dict[str, dict[str, float]] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/oauth2/register"
        # warm every worker (imports, connections, policy cache) before measuring
        run_wrk(url, BODY_202, bearer=TOKEN, duration=2, connections=args.connections)
        for name, body, state in (("202", BODY_202, "pending"), ("400", BODY_400, "refused")):
            before = count_requests().get(state, 0)
            cpu_before = tree_cpu_seconds(process.pid)
            r = run_wrk(url, body, bearer=TOKEN, duration=args.duration, connections=args.connections)
            r["cpu_ms"] = (tree_cpu_seconds(process.pid) - cpu_before) * 1000 / max(r["requests"], 1)
            written = count_requests().get(state, 0) - before
            # every answered request must have written its row (wrk's count includes a few cut at the end)
            if written < r["requests"] * 0.98:
                raise RuntimeError(
                    f"{server} {name} path: wrk counted {r['requests']:.0f} requests, only {written} {state} rows"
                )
            if name == "202" and r["non_2xx"]:
                raise RuntimeError(f"{server} 202 path: {r['non_2xx']:.0f} non-2xx answers")
            r["rows"] = float(written)
            results[name] = r
            print(
                f"{server} intake {name} path: {r['rps']:.0f} registrations/s, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, server CPU {r['cpu_ms']:.2f} ms/request ({written} {state} rows)",
                flush=True,
            )
        # The anonymous path (a new pending registration each time: coalescing off) and the coalesced path (the
        # same registration again: each answered with the first one and a fresh registration access token).
        for name, coalesce in (("anonymous", False), ("coalesced", True)):
            rows_before, coalesced_before = anonymous_counts(coalesce=coalesce)
            # The server's processes keep the profile for CACHE_SECONDS (approvals.oauth2.cache): a change made
            # behind their back (this UPDATE) is theirs once that has passed.
            time.sleep(PROFILE_CACHE_SECONDS + 0.5)
            cpu_before = tree_cpu_seconds(process.pid)
            r = run_wrk(url, BODY_ANON, bearer=None, duration=args.duration, connections=args.connections)
            r["cpu_ms"] = (tree_cpu_seconds(process.pid) - cpu_before) * 1000 / max(r["requests"], 1)
            rows, coalesced = anonymous_counts()
            done = (rows - rows_before) if name == "anonymous" else (coalesced - coalesced_before)
            if done < r["requests"] * 0.98 - 1 or r["non_2xx"]:
                raise RuntimeError(
                    f"{server} {name} path: wrk counted {r['requests']:.0f} requests ({r['non_2xx']:.0f} non-2xx), "
                    f"only {done} {'new requests' if name == 'anonymous' else 'coalesced'}"
                )
            results[name] = r
            print(
                f"{server} intake {name} path: {r['rps']:.0f} registrations/s, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, server CPU {r['cpu_ms']:.2f} ms/request ({done} {name})",
                flush=True,
            )
        # The 401 path: every refusal must be counted (a refused-credential tally, folded into the audit later).
        before = count_refused()
        cpu_before = tree_cpu_seconds(process.pid)
        r = run_wrk(url, BODY_202, bearer=BAD_TOKEN, duration=args.duration, connections=args.connections)
        r["cpu_ms"] = (tree_cpu_seconds(process.pid) - cpu_before) * 1000 / max(r["requests"], 1)
        counted = count_refused() - before
        if counted < r["requests"] * 0.98:
            raise RuntimeError(f"{server} 401 path: wrk counted {r['requests']:.0f} requests, only {counted} recorded")
        results["401"] = r
        print(
            f"{server} intake 401 path: {r['rps']:.0f} refusals/s, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms ({counted} counted)",
            flush=True,
        )
        # The 202 path while a second load generator floods the 401 path over as many connections.
        flood: dict[str, dict[str, float]] = {}
        flooder = threading.Thread(
            target=lambda: flood.setdefault(
                "401", run_wrk(url, BODY_202, bearer=BAD_TOKEN, duration=args.duration, connections=args.connections)
            )
        )
        flooder.start()
        cpu_before = tree_cpu_seconds(process.pid)
        r = run_wrk(url, BODY_202, bearer=TOKEN, duration=args.duration, connections=args.connections)
        r["cpu_ms"] = (tree_cpu_seconds(process.pid) - cpu_before) * 1000 / max(r["requests"], 1)
        flooder.join()
        results["202_flood"], results["401_flood"] = r, flood["401"]
        results["401_flood"].setdefault("cpu_ms", 0.0)
        print(
            f"{server} intake 202 path under a 401 flood: {r['rps']:.0f} registrations/s, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms (flood {flood['401']['rps']:.0f}/s)",
            flush=True,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def _median_run(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per path, the run with the median rate (its latencies stay consistent with its rate), and the median
    server CPU per request of all runs."""
    median = {}
    for path in runs[0]:
        chosen = dict(sorted((run[path] for run in runs), key=lambda r: r["rps"])[len(runs) // 2])
        chosen["cpu_ms"] = statistics.median(run[path]["cpu_ms"] for run in runs)
        median[path] = chosen
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--server",
        default="gunicorn",
        help=f"WSGI server(s) to measure, comma-separated: {', '.join(SERVERS)} (default gunicorn)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the servers this many times, interleaved; report each one's median run",
    )
    parser.add_argument(
        "--close",
        action="store_true",
        help="send Connection: close (a new connection per request, as behind a proxy without upstream keep-alive)",
    )
    parser.add_argument("--no-idp", action="store_true", help="skip the oidc-provider baseline")
    args = parser.parse_args()
    global CLOSE_CONNECTIONS
    CLOSE_CONNECTIONS = args.close
    servers = [name.strip() for name in args.server.split(",") if name.strip()]
    unknown = [name for name in servers if name not in SERVERS]
    if unknown or not servers:
        print(f"--server: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(SERVERS)}", file=sys.stderr)
        return 2
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2

    print(f"preparing database {DB_NAME} ...", flush=True)
    recreate_database()
    seed()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {server: [] for server in servers}
    for _ in range(max(1, args.rounds)):
        for server in servers:
            runs[server].append(measure_server(server, args))
    measured = {server: _median_run(server_runs) for server, server_runs in runs.items()}

    raw = raw_baseline(duration=args.duration, connections=args.connections)
    print(
        f"baseline raw psycopg: {raw['rps']:.0f} tx/s, p50 {raw['p50_ms']:.1f} ms, p99 {raw['p99_ms']:.1f} ms",
        flush=True,
    )

    idp = None
    if not args.no_idp and shutil.which("node"):
        from tests.idp_server import IdPProcess

        with IdPProcess() as process:
            body = {
                "client_name": "bench-agent",
                "grant_types": ["client_credentials"],
                "response_types": [],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": JWKS,
            }
            idp = run_wrk(
                process.registration_endpoint,
                body,
                bearer=process.initial_access_token,
                duration=args.duration,
                connections=args.connections,
            )
            if idp["non_2xx"]:
                raise RuntimeError(f"oidc-provider answered {idp['non_2xx']:.0f} non-2xx responses; check the body")
            print(
                f"baseline oidc-provider /reg: {idp['rps']:.0f} registrations/s, p50 {idp['p50_ms']:.1f} ms, "
                f"p99 {idp['p99_ms']:.1f} ms",
                flush=True,
            )

    rounds = f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    rounds += ", Connection: close" if args.close else ""
    for server, results in measured.items():
        ratio_raw = results["202"]["rps"] / raw["rps"]
        line = (
            f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC intake ({args.workers} {server} workers, {args.connections} "
            f"conns, {args.duration}s, {os.cpu_count()} cores{rounds}): intake_rps 202 path {results['202']['rps']:.0f}/s "
            f"(p50 {results['202']['p50_ms']:.1f} ms, p99 {results['202']['p99_ms']:.1f} ms, server CPU "
            f"{results['202']['cpu_ms']:.2f} ms/request), 400 path {results['400']['rps']:.0f}/s (p50 "
            f"{results['400']['p50_ms']:.1f} ms, p99 {results['400']['p99_ms']:.1f} ms, server CPU "
            f"{results['400']['cpu_ms']:.2f} ms/request), anonymous path {results['anonymous']['rps']:.0f}/s (p99 "
            f"{results['anonymous']['p99_ms']:.1f} ms, server CPU {results['anonymous']['cpu_ms']:.2f} ms/request), "
            f"coalesced path {results['coalesced']['rps']:.0f}/s (p99 {results['coalesced']['p99_ms']:.1f} ms, server "
            f"CPU {results['coalesced']['cpu_ms']:.2f} ms/request), 401 path {results['401']['rps']:.0f}/s (p50 "
            f"{results['401']['p50_ms']:.1f} ms, p99 {results['401']['p99_ms']:.1f} ms), 202 path under a 401 flood "
            f"{results['202_flood']['rps']:.0f}/s (p99 {results['202_flood']['p99_ms']:.1f} ms; flood "
            f"{results['401_flood']['rps']:.0f}/s); raw psycopg baseline {raw['rps']:.0f} tx/s "
            f"→ ratio {ratio_raw:.2f} (goal ≥ 0.12)"
        )
        print(
            f"server={server} intake_rps={results['202']['rps']:.0f} intake_400_rps={results['400']['rps']:.0f} "
            f"raw_rps={raw['rps']:.0f} ratio_raw={ratio_raw:.3f}",
            end="",
        )
        if idp is not None:
            ratio_idp = results["202"]["rps"] / idp["rps"]
            line += f"; oidc-provider /reg {idp['rps']:.0f}/s → ratio {ratio_idp:.2f}"
            print(f" idp_rps={idp['rps']:.0f} ratio_idp={ratio_idp:.3f}", end="")
        print()
        append_result(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
