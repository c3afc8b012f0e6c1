"""``manage.py rundemo`` (``make run``) as a person runs it: a real demo on free ports and a temporary data
directory. SIGTERM or SIGINT to the demo's own process stops the IdP, the worker and the web server — each is
reaped, none left running or defunct — and the console is not flooded with Celery's per-task lines."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
START_BOUND = 120  # seconds: a bound on waiting for the demo to come up, not a measurement


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir: Path) -> dict[str, str]:
    # Only what `make run` sets: no DATABASE_URL, REDIS_URL or test settings leak into the demo.
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    return keep | {"REGISTRAR_EMBEDDED": "1", "REGISTRAR_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo-data")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=_env(data_dir),
        check=True,
        timeout=300,
    )
    return data_dir


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_idp_worker_and_server_and_celery_keeps_quiet(demo_data, tmp_path, signum):
    idp = bool(shutil.which("node") and (ROOT / "tests" / "idp" / "node_modules").exists())
    port = _free_port()
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        demo = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "rundemo",
                "--addr",
                f"127.0.0.1:{port}",
                "--idp-port",
                str(_free_port()),
                "--docs-port",
                str(_free_port()),
            ],
            cwd=ROOT,
            env=_env(demo_data),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the signal goes to the demo's process only, as `kill PID` does
        )
    try:
        deadline = time.monotonic() + START_BOUND
        # up: every child started, the server answering, and the worker has sealed the seed data's events
        while not (
            len(_children(demo.pid)) == (3 if idp else 2)
            and _port_open(port)
            and "event=log_sealed" in log_path.read_text()
        ):
            assert demo.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        children = _children(demo.pid)
        output = log_path.read_text()
        # Registrar's own INFO lines stay; Celery's three lines per second for the sequencer do not
        assert "level=INFO logger=portal.tlog.sequencer" in output
        assert "Sending due task log-sequence" not in output
        assert "portal.tasks.log_sequence[" not in output, output[-2000:]

        os.kill(demo.pid, signum)
        assert demo.wait(timeout=60) == 0, log_path.read_text()[-2000:]
        assert [pid for pid in children if _running(pid)] == []
        # each child stopped on its own when asked: none had to be killed
        (stopped,) = [line for line in log_path.read_text().splitlines() if line.startswith("demo stopped: ")]
        expected = ["IdP", "worker", "web server"] if idp else ["worker", "web server"]
        assert [part.split(" (")[0] for part in stopped.removeprefix("demo stopped: ").split(", ")] == expected
        assert "killed" not in stopped, stopped
        assert not _port_open(port)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
