"""The invariant matrix on SQLite too (the demo's database, ``make run``): the same modules in a pytest subprocess
whose ``DATABASE_URL`` is an SQLite file, so no invariant depends on a PostgreSQL-only code path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()
pytestmark = pytest.mark.slow


def test_the_invariant_matrix_holds_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PYTEST_XDIST", "DJANGO_"))}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'invariants.sqlite3'}",
        "DATABASE_PREPARED_STATEMENTS": "false",  # a PostgreSQL driver option
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "ERROR",
        "INVARIANTS_EXPECT_VENDOR": "sqlite",  # tests/invariants/conftest.py checks it really is SQLite
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", f"--ignore={HERE}", str(HERE.parent)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-40:])
    assert run.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "error" not in tail.lower(), tail
