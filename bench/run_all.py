"""Run every benchmark in bench/, each on a PostgreSQL database of its own, created and migrated first.

    .venv/bin/python bench/run_all.py            # every benchmark at its documented size (`make bench`; slow)
    .venv/bin/python bench/run_all.py --smoke    # every benchmark at a tiny size: do they all still run?
    .venv/bin/python bench/run_all.py --only policy,sweep [--smoke]

For each script: a database ``reg_bench_<script>`` is dropped if left over, created and migrated (``manage.py
migrate``, test settings), and handed to the script through every variable the scripts read for their
database (``DATABASE_URL``, ``BENCH_DATABASE_NAME``, ``REGISTRAR_BENCH_DATABASE_URL``); scripts that build
further databases of their own (clones, a 10M-event log) name them after it. Afterwards the database and
everything named after it is dropped. ``merkle_library_eval`` evaluates a library Registrar does not use: it
runs in a throw-away virtualenv with ``pymerkle`` (``MERKLE_EVAL_REQUIREMENT``). A script whose prerequisite is
missing (``wrk``, ``valgrind``: ``make bench`` installs them) is reported as not run, with the reason, and the
run fails. ``--smoke`` keeps bench/RESULTS.md as it was: tiny runs are not results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# script: (arguments at its documented size, arguments for --smoke, prerequisites)
BENCHMARKS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "policy": ([], [], []),
    "cimd": ([], ["20"], []),
    "approvals_queue": ([], [], []),
    "inventory": (["--seed", "1000000"], ["--seed", "2000", "--repeat", "3"], []),
    "lifecycle_policies": ([], ["--clients", "5000", "--acted", "200", "--events", "1000"], []),
    "sweep": ([], ["--clients", "5000", "--due", "500"], []),
    # Real worker + beat on the default schedule: about --spread + two sweep intervals (60 s) whatever the size.
    "expiry_overshoot": ([], ["--clients", "4", "--spread", "5"], ["redis-server", "node"]),
    "provision": ([], ["--clients", "40", "--workers", "1"], ["redis-server", "node"]),
    "intake": ([], ["--duration", "2", "--connections", "2", "--workers", "1", "--rounds", "1", "--no-idp"], ["wrk"]),
    "intake_cpu": ([], ["--requests", "5"], ["valgrind", "wrk"]),
    "audit_log": (
        [],
        ["--parts", "append,verify", "--connections", "2", "--duration", "2", "--events", "2000"],
        ["wrk"],
    ),
    # What the client counts cost the 201 path (triggers on/off in turn); `counts.py dashboard` needs a database
    # seeded at scale (manage.py seed_scale), so it is run by hand (docs/scale.md).
    "counts": (["intake"], ["intake", "--requests", "10", "--rounds", "1"], []),
    # A PostgreSQL, Redis and test IdP of its own (tests/faults/harness.py), faults injected phase by phase.
    "faults": ([], ["--seconds", "2"], ["redis-server", "node", "initdb"]),
    # An evaluation of a library Registrar does not depend on: run in a throw-away virtualenv (its docstring).
    "merkle_library_eval": ([], [], []),
}


MERKLE_EVAL_REQUIREMENT = "pymerkle==7.0.0"


def merkle_python(workdir: Path) -> str:
    """A virtualenv of its own with pymerkle, as bench/merkle_library_eval.py's docstring asks."""
    venv = workdir / "merkle-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", MERKLE_EVAL_REQUIREMENT], check=True)
    return str(venv / "bin" / "python")


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(sql)


def drop_family(name: str) -> None:
    """Drop ``name`` and every database named after it (a script's clones and extra databases)."""
    import psycopg

    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", [name, name + "\\_%"]
            )
        ]
        for db in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def missing(prerequisites: list[str]) -> list[str]:
    return [f"the command {need}" for need in prerequisites if shutil.which(need) is None]


def env_for(name: str) -> dict[str, str]:
    url = with_db(SERVER_URL, name)
    return {
        **os.environ,
        "DATABASE_URL": url,
        "BENCH_DATABASE_NAME": name,
        "BENCH_BIG_DATABASE_NAME": f"{name}_big",
        "REGISTRAR_BENCH_DATABASE_URL": url,
        "BENCH_ADMIN_DATABASE_URL": SERVER_URL,
    }


def create_and_migrate(name: str) -> None:
    drop_family(name)
    admin(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env_for(name) | {"DJANGO_SETTINGS_MODULE": "portal.settings_test"},
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; bench/RESULTS.md is left unchanged")
    parser.add_argument("--only", default="", help="comma-separated script names (default: every one)")
    parser.add_argument("--keep", action="store_true", help="keep each benchmark's database afterwards")
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    on_disk = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "run_all")
    unlisted = sorted(set(on_disk) - set(BENCHMARKS))
    if unknown or unlisted:
        print(f"unknown benchmark(s): {unknown}; scripts in bench/ not listed here: {unlisted}", file=sys.stderr)
        return 2
    results_before = RESULTS.read_text() if RESULTS.exists() else None
    outcome: dict[str, str] = {}
    try:
        for script in chosen:
            full, smoke, prerequisites = BENCHMARKS[script]
            lacking = missing(prerequisites)
            if lacking:
                outcome[script] = "NOT RUN: needs " + ", ".join(lacking)
                print(f"== {script}: not run, needs {', '.join(lacking)}", flush=True)
                continue
            name = f"reg_bench_{script}"
            workdir = Path(tempfile.mkdtemp(prefix=f"registrar-bench-{script}-"))
            script_args = [str(BENCH / f"{script}.py"), *(smoke if args.smoke else full)]
            print(f"== {script}: database {name} (created, migrated); {' '.join(script_args)}", flush=True)
            began = time.monotonic()
            try:
                create_and_migrate(name)
                python = merkle_python(workdir) if script == "merkle_library_eval" else sys.executable
                status = subprocess.run([python, *script_args], cwd=ROOT, env=env_for(name)).returncode
            except (subprocess.CalledProcessError, OSError) as exc:
                status = getattr(exc, "returncode", 1) or 1
                print(f"== {script}: setup failed: {exc}", flush=True)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
                if not args.keep:
                    drop_family(name)
            took = time.monotonic() - began
            # A script exits non-zero on an error and also when it misses its budget (its output says which).
            outcome[script] = f"ok ({took:.0f} s)" if status == 0 else f"exit {status} ({took:.0f} s): see above"
            print(f"== {script}: {outcome[script]}", flush=True)
    finally:
        if args.smoke and results_before is not None:
            RESULTS.write_text(results_before)
    print("\nbenchmarks" + (" (smoke sizes; bench/RESULTS.md unchanged)" if args.smoke else "") + ":")
    for script, result in outcome.items():
        print(f"  {script:<22} {result}")
    return 0 if all(r.startswith("ok") for r in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
