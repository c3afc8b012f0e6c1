"""CPU instructions per registration, counted by valgrind: a figure the VM's noise cannot move.

    .venv/bin/python bench/intake_cpu.py [--requests 150]

Why: throughput on these shared 2-core VMs swings by ±20 % from one run to the next (steal time), so
``bench/intake.py`` cannot tell a change worth 5 % from noise. Instructions executed do not depend on what
else the machine is doing. Runs of the same code on different occasions agree to within 2-4 % per request
(what remains: per-process caches that expire after 5 s of a slowed-down run, random ids and tokens, garbage
collection); for a smaller effect, count old and new code side by side in one sitting.

What is counted: the instructions of ONE Python process (Django's WSGI handler with every middleware, the
view, the psycopg and redis clients), not PostgreSQL's or Redis's own work and not gunicorn's socket
handling; ``bench/intake.py`` measures the whole stack. Each target runs twice under ``valgrind
--tool=callgrind`` after the same warm-up, once with 0 and once with ``--requests`` requests; the difference
divided by the number of requests is the cost of one request (start-up and warm-up cancel out).

Targets, all in the same run against the database ``bench/intake.py`` prepares (with its token and catalogue):

- ``intake 201``: ``POST /oauth2/register``, a low-risk registration: auto-approved, so the owner's quota is
  checked, the client and its outbox entry are written and it is delivered to the dry-run IdP inline;
- ``intake 202``: ``POST /oauth2/register``, a medium-risk registration (pending request, token use, audit event);
- ``intake 400``: the same with an unknown scope (refused request and audit event);
- ``intake 401``: the same with an unknown initial access token (a refused-credential tally upsert);
- ``healthz``: ``GET /healthz`` through the same handler and middleware — the cheapest request the stack answers
  (sent from a non-probe address, so it passes every middleware rather than the probe shortcut; it no longer
  queries the database);
- ``raw``: the 202 path's rows written by bench/intake.py's raw psycopg statement — the driver's share alone;
- ``log kv`` / ``log json``: one typical log line (``outbox_delivered …``, inside a request id) through
  ``portal.logs``' key=value or JSON formatter to a handler writing to /dev/null — what each line costs, to set
  against a registration (the 202/400 paths write no line at the default level; gunicorn's access log adds one).

Prints instructions per request and the ratio of the 202 path to ``healthz`` and ``raw``, and appends one
line to bench/RESULTS.md. Needs valgrind (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

TARGETS = ("intake 201", "intake 202", "intake 400", "intake 401", "healthz", "raw", "log kv", "log json")
WARM_UP = 30


def _intake_bench():
    """bench/intake.py as a module (its database, bodies, token and raw statement)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_intake", BENCH / "intake.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- child: run one target N times, under valgrind ------------------------------------------------------


def child(target: str, n: int) -> None:
    bench = _intake_bench()
    os.environ.update(bench.server_env())
    import django

    django.setup()
    if target == "raw":
        call = _raw_call(bench)
    elif target.startswith("log "):
        call = _log_call(target.removeprefix("log "))
    else:
        call = _wsgi_call(bench, target)
    for _ in range(WARM_UP):
        call()
    for _ in range(n):
        call()


def _wsgi_call(bench, target: str):
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    remote = "127.0.0.1"
    if target == "healthz":
        # Not from a probe network: through the whole middleware stack like a registration.
        method, path, body, expect, remote = "GET", "/healthz", b"", "200", "192.0.2.10"
    else:
        payload = {
            "intake 201": bench.BODY_201,
            "intake 202": bench.BODY_202,
            "intake 400": bench.BODY_400,
            "intake 401": bench.BODY_202,
        }[target]
        method, path, body, expect = "POST", "/oauth2/register", json.dumps(payload).encode(), target[-3:]
    bearer = {"intake 201": bench.TOKEN_201, "intake 401": bench.BAD_TOKEN}.get(target, bench.TOKEN)

    def call() -> None:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": remote,
            "HTTP_HOST": "127.0.0.1:8000",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {bearer}",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        status: list[str] = []
        response = app(environ, lambda s, headers, exc_info=None: status.append(s))
        b"".join(response)
        response.close()
        if not status[0].startswith(expect):
            raise RuntimeError(f"{target}: expected {expect}, got {status[0]}")

    return call


def _log_call(log_format: str):
    import logging

    from portal.logs import bind_request_id, formatter

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    handler.setFormatter(formatter(log_format))
    log = logging.getLogger("inventory.connectors.bench")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    bind_request_id("3f2a9c1e7b8d4e6fa0b1c2d3e4f5a6b7")

    def call() -> None:
        log.info(
            "%s %s",
            "outbox_delivered",
            "entry_id=123456 client_id=98765 operation=create idp_client_id=dryrun-reg_AbCdEfGhIjKlMnOpQrSt",
        )

    return call


def _raw_call(bench):
    import psycopg

    return bench.raw_writer(psycopg.connect(bench.DB_URL, autocommit=True, prepare_threshold=0))


# --- parent: count ----------------------------------------------------------------------------------------


def instructions(target: str, n: int) -> int:
    """Instructions executed by a child running ``target`` n times (after the warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                target,
                str(n),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{target} x{n} failed under valgrind:\n{proc.stderr[-3000:]}")
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--child", nargs=2, metavar=("TARGET", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if not shutil.which("valgrind"):
        print("valgrind is required: apt-get install valgrind", file=sys.stderr)
        return 2

    bench = _intake_bench()
    print(f"preparing database {bench.DB_NAME} ...", flush=True)
    bench.recreate_database()
    bench.seed()
    jobs = [(target, n) for target in TARGETS for n in (0, args.requests)]
    print(f"counting {len(jobs)} runs under callgrind (a few minutes) ...", flush=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
    per = {target: (counts[(target, args.requests)] - counts[(target, 0)]) / args.requests for target in TARGETS}
    for target in TARGETS:
        print(f"{target:12s} {per[target] / 1e6:8.4f} M instructions/request", flush=True)

    vs_healthz = per["intake 202"] / per["healthz"]
    vs_raw = per["intake 202"] / per["raw"]
    line = (
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC intake_cpu (callgrind, one process, {args.requests} requests): "
        f"202 path {per['intake 202'] / 1e6:.2f} M instructions/request, 400 path {per['intake 400'] / 1e6:.2f} M, "
        f"201 path {per['intake 201'] / 1e6:.2f} M, 401 path {per['intake 401'] / 1e6:.2f} M; "
        f"healthz {per['healthz'] / 1e6:.2f} M → ratio {vs_healthz:.1f}; raw psycopg statement "
        f"{per['raw'] / 1e6:.2f} M → ratio {vs_raw:.1f}"
    )
    line += (
        f"; one log line: kv {per['log kv'] / 1e3:.1f} k, json {per['log json'] / 1e3:.1f} k instructions "
        f"({per['log json'] / per['intake 202'] * 100:.2f} % of a 202 registration)"
    )
    print(
        f"intake_instructions={per['intake 202']:.0f} intake_201_instructions={per['intake 201']:.0f} "
        f"healthz_instructions={per['healthz']:.0f} "
        f"raw_instructions={per['raw']:.0f} ratio_healthz={vs_healthz:.2f} ratio_raw={vs_raw:.2f} "
        f"log_kv_instructions={per['log kv']:.0f} log_json_instructions={per['log json']:.0f}"
    )
    bench.append_result(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
