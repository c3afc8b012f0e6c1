"""Registration intake throughput: the production stack on loopback vs. two baselines measured in the same run.

    .venv/bin/python bench/intake.py [--duration 10] [--connections 8] [--workers 3] [--no-idp]

What runs:

1. A fresh PostgreSQL database (``registrar_bench_intake``), migrated, with the test catalogue, a dry-run IdP,
   one owner and an initial access token with (practically) unlimited uses.
2. gunicorn (``--workers`` sync workers, DEBUG off, Redis cache so the rate limiter does its round trip; the
   limits are set high enough never to trigger) on 127.0.0.1.
3. ``wrk`` (Debian package; a C load generator that leaves the cores to the server) with a Lua script POSTing
   the same JSON body over ``--connections`` connections for ``--duration`` seconds, twice:
   - the 202 path: a medium-risk registration (``tickets:write``) → pending request + token use + audit event;
   - the 400 path: an unknown scope → refused request + audit event.
4. Baseline A, raw psycopg: ``--connections`` threads, one connection each, writing the 202 path's rows the
   way the intake writes them (token use, request INSERT, audit event INSERT: one prepared statement, one
   transaction per registration), for the same duration.
5. Baseline B, the oidc-provider test IdP's own registration endpoint (in-memory, ungoverned) under the
   same wrk load, unless ``--no-idp`` or Node.js is missing.

Prints ``intake_rps`` for both paths, the baselines and the ratios, and appends one line to bench/RESULTS.md.
Row counts are checked after each run, so a fast stream of errors cannot pass for throughput.
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

    from approvals.models import InitialAccessToken
    from inventory.models import IdPConnection, ScopeDefinition
    from portal.crypto import hash_token
    from portal.models import User

    for name, sensitivity in (("tickets:read", "low"), ("tickets:write", "medium"), ("repo:write", "high")):
        ScopeDefinition.objects.create(name=name, sensitivity=sensitivity, category="internal_tool")
    IdPConnection.objects.create(
        name="bench-dry-run", kind="dry-run", is_default=True,
        config={"issuer": "https://idp.bench", "token_endpoint": "https://idp.bench/token"},
    )  # fmt: skip
    owner = User.objects.create_user("bench-owner", "bench@example.com", "x" * 20)
    InitialAccessToken.objects.create(
        owner=owner, purpose="benchmark", prefix=TOKEN[:12], token_hash=hash_token(TOKEN),
        allowed_scopes=["tickets:read", "tickets:write"], max_ttl_seconds=86400, max_uses=2_000_000_000,
        expires_at=timezone.now() + timedelta(days=1),
    )  # fmt: skip


def count_requests() -> dict[str, int]:
    import psycopg

    with psycopg.connect(DB_URL) as conn:
        rows = conn.execute("SELECT state, count(*) FROM approvals_registrationrequest GROUP BY state").fetchall()
    return dict(rows)


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
wrk.body = {body}
"""


def run_wrk(url: str, body: dict, *, bearer: str | None, duration: int, connections: int) -> dict[str, float]:
    auth = f'wrk.headers["Authorization"] = "Bearer {bearer}"' if bearer else ""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA.format(auth=auth, body=json.dumps(json.dumps(body))))
    try:
        out = subprocess.run(
            ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=duration + 60,
        ).stdout  # fmt: skip
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
# The 202 path's rows as the intake writes them (approvals.intake._insert_with_event): one statement per
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
    token_id, owner_id = conn.execute("SELECT id, owner_id FROM approvals_initialaccesstoken").fetchone()
    idp_id = conn.execute("SELECT id FROM inventory_idpconnection").fetchone()[0]
    metadata = json.dumps(BODY_202)
    verdict = json.dumps({"tier": "medium", "outcome": "review", "reasons": [{"code": "medium_sensitivity_scope"}]})

    def write() -> None:
        public_id = "reg_" + uuid.uuid4().hex[:20]
        row = conn.execute(
            RAW_STATEMENT,
            (token_id, public_id, metadata, idp_id, owner_id, uuid.uuid4().hex + uuid.uuid4().hex, verdict,
             str(token_id), public_id, verdict),
        ).fetchone()  # fmt: skip
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--no-idp", action="store_true", help="skip the oidc-provider baseline")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2

    print(f"preparing database {DB_NAME} ...", flush=True)
    recreate_database()
    seed()
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="bench-intake-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"gunicorn log: {log.name}", flush=True)
    gunicorn = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "portal.wsgi:application", "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", *(["--access-logfile", "-"] if os.environ.get("BENCH_ACCESS_LOG") else [])],
        cwd=ROOT, env=server_env(), stderr=log,
    )  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/oauth2/register"
        # warm every worker (imports, connections, policy cache) before measuring
        run_wrk(url, BODY_202, bearer=TOKEN, duration=2, connections=args.connections)
        for name, body, state in (("202", BODY_202, "pending"), ("400", BODY_400, "refused")):
            before = count_requests().get(state, 0)
            r = run_wrk(url, body, bearer=TOKEN, duration=args.duration, connections=args.connections)
            written = count_requests().get(state, 0) - before
            # every answered request must have written its row (wrk's count includes a few cut at the end)
            if written < r["requests"] * 0.98:
                raise RuntimeError(
                    f"{name} path: wrk counted {r['requests']:.0f} requests, only {written} {state} rows"
                )
            if name == "202" and r["non_2xx"]:
                raise RuntimeError(f"202 path: {r['non_2xx']:.0f} non-2xx answers")
            r["rows"] = float(written)
            results[name] = r
            print(f"intake {name} path: {r['rps']:.0f} registrations/s, p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms ({written} {state} rows)", flush=True)  # fmt: skip
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)

    results["raw"] = raw_baseline(duration=args.duration, connections=args.connections)
    print(f"baseline raw psycopg: {results['raw']['rps']:.0f} tx/s, p50 {results['raw']['p50_ms']:.1f} ms, "
          f"p99 {results['raw']['p99_ms']:.1f} ms", flush=True)  # fmt: skip

    if not args.no_idp and shutil.which("node"):
        from tests.idp_server import IdPProcess

        with IdPProcess() as idp:
            body = {"client_name": "bench-agent", "grant_types": ["client_credentials"], "response_types": [],
                    "token_endpoint_auth_method": "private_key_jwt", "jwks": JWKS}  # fmt: skip
            r = run_wrk(idp.registration_endpoint, body, bearer=idp.initial_access_token,
                        duration=args.duration, connections=args.connections)  # fmt: skip
            if r["non_2xx"]:
                raise RuntimeError(f"oidc-provider answered {r['non_2xx']:.0f} non-2xx responses; check the body")
            results["idp"] = r
            print(f"baseline oidc-provider /reg: {r['rps']:.0f} registrations/s, p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms", flush=True)  # fmt: skip

    ratio_raw = results["202"]["rps"] / results["raw"]["rps"]
    line = (
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC intake ({args.workers} gunicorn workers, {args.connections} conns, "
        f"{args.duration}s, {os.cpu_count()} cores): intake_rps 202 path {results['202']['rps']:.0f}/s "
        f"(p50 {results['202']['p50_ms']:.1f} ms, p99 {results['202']['p99_ms']:.1f} ms), "
        f"400 path {results['400']['rps']:.0f}/s (p50 {results['400']['p50_ms']:.1f} ms, "
        f"p99 {results['400']['p99_ms']:.1f} ms); raw psycopg baseline {results['raw']['rps']:.0f} tx/s "
        f"→ ratio {ratio_raw:.2f} (goal ≥ 0.12)"
    )
    print(f"intake_rps={results['202']['rps']:.0f} intake_400_rps={results['400']['rps']:.0f} "
          f"raw_rps={results['raw']['rps']:.0f} ratio_raw={ratio_raw:.3f}", end="")  # fmt: skip
    if "idp" in results:
        ratio_idp = results["202"]["rps"] / results["idp"]["rps"]
        line += f"; oidc-provider /reg {results['idp']['rps']:.0f}/s → ratio {ratio_idp:.2f}"
        print(f" idp_rps={results['idp']['rps']:.0f} ratio_idp={ratio_idp:.3f}", end="")
    print()
    append_result(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
