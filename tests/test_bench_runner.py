"""`make bench` (bench/run_all.py): every script in bench/ is run, each on a database of its own that is created
and migrated first and dropped afterwards; a smoke run leaves bench/RESULTS.md as it was."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("bench_run_all", ROOT / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_script_is_run_and_make_bench_runs_them():
    runner = _runner()
    on_disk = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"run_all"}
    assert set(runner.BENCHMARKS) == on_disk
    makefile = (ROOT / "Makefile").read_text()
    assert "\nbench: " in makefile and "$(PY) bench/run_all.py $(BENCH_ARGS)" in makefile
    assert "\nbench-smoke: " in makefile and "bench/run_all.py --smoke" in makefile


def test_each_benchmark_is_handed_its_own_database_under_every_name_the_scripts_read():
    env = _runner().env_for("reg_bench_sweep")
    assert env["DATABASE_URL"].endswith("/reg_bench_sweep")
    assert env["REGISTRAR_BENCH_DATABASE_URL"] == env["DATABASE_URL"]
    assert env["BENCH_DATABASE_NAME"] == "reg_bench_sweep"  # bench/intake.py, audit_log.py, intake_cpu.py
    assert env["BENCH_BIG_DATABASE_NAME"] == "reg_bench_sweep_big"  # dropped with it (named after it)


def test_an_unknown_benchmark_is_refused_before_anything_runs():
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--only", "nonsense"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown benchmark(s): ['nonsense']" in result.stderr


@pytest.mark.slow
@pytest.mark.postgres_only  # the benchmarks' databases are PostgreSQL ones
def test_smoke_run_creates_migrates_and_drops_its_database_and_leaves_results_alone():
    import psycopg

    runner = _runner()
    results_before = (ROOT / "bench" / "RESULTS.md").read_text()
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--smoke", "--only", "cimd"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== cimd: database reg_bench_cimd (created, migrated)" in result.stdout
    assert "cimd                   ok" in result.stdout
    assert (ROOT / "bench" / "RESULTS.md").read_text() == results_before
    with psycopg.connect(runner.SERVER_URL, autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'reg_bench_cimd%'").fetchall()
    assert left == []
