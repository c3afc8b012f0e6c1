"""``make prod-check`` as a test: the production configuration, started as the systemd units start it, takes a
registration (201 and 202), an approval through the management API and a sweep (contrib/prod_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# postgres_only: prod_check starts its own PostgreSQL database, Redis and IdP; run in both stages at once, the two
# checks raced for the worker metrics port.
pytestmark = [pytest.mark.slow, pytest.mark.postgres_only]


def test_production_configuration_registers_approves_and_sweeps():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "DEBUG"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "contrib" / "prod_check.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for proof in (
        "registration 201",
        "registration 202",
        "approval through the management API: 200",
        "sweep: the short-lived client expired",
        "static file served by WhiteNoise",
        "PASSED",
    ):
        assert proof in output, output[-6000:]
