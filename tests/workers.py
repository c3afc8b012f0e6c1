"""Real ``celery -A portal worker`` processes for reliability tests and benchmarks.

The workers run ``portal.settings`` (not the test settings) against the given database URL and a Redis
broker, in their own session so ``kill9()`` takes down the main process and its pool children at once.
Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELERY = Path(sys.executable).with_name("celery")


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for Django's ``connection.settings_dict`` (e.g. pytest-django's test database)."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else f"{user}@"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def worker_env(*, database: str, redis_url: str, encryption_key: str, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "DEBUG": "true",
        "REGISTRAR_EMBEDDED": "1",  # demo-grade SECRET_KEY; the database and broker are real
        "REGISTRAR_DEMO_MODE": "false",
        "REGISTRAR_ENCRYPTION_KEY": encryption_key,
        "REGISTRAR_DATA_DIR": tempfile.mkdtemp(prefix="registrar-worker-"),
        "PYTHONPATH": str(ROOT),
    }
    from portal.tlog.keys import log_signer

    # the workers' sequencer signs with the test process's key, so both verify the same log
    env["REGISTRAR_LOG_SIGNING_KEY"] = log_signer().encoded
    env.update(overrides)
    return env


class CeleryWorker:
    def __init__(self, name: str, *, env: dict[str, str], concurrency: int = 4, loglevel: str = "info") -> None:
        self.name = name
        self.env = env
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, ready_timeout: float = 30.0) -> CeleryWorker:
        fd, log_name = tempfile.mkstemp(prefix=f"registrar-worker-{self.name}-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(CELERY),
                    "-A",
                    "portal",
                    "worker",
                    "-l",
                    self.loglevel,
                    "-c",
                    str(self.concurrency),
                    "-n",
                    f"{self.name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-P",
                    "prefork",
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log_tail()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready in {ready_timeout}s: {self.log_tail()}")

    def pids(self) -> set[int]:
        """The main process and its pool children."""
        if self.process is None:
            return set()
        main = self.process.pid
        found = {main}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == main:
                found.add(int(stat.parent.name))
        return found

    def kill9(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "no log"
        return self.log_path.read_text(errors="replace")[-chars:]


class RedisServer:
    """A private, non-persistent ``redis-server`` on a free loopback port that a test may kill and restart."""

    def __init__(self, port: int = 0, binary: str = "redis-server") -> None:
        self.port = port or _free_port()
        self.binary = binary
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill9(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            self.process = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def celery_beat(env: dict[str, str]):
    """``celery -A portal beat`` with the project's default schedule, in its own session."""
    workdir = Path(tempfile.mkdtemp(prefix="registrar-beat-"))
    log = (workdir / "beat.log").open("wb")
    process = subprocess.Popen(
        [str(CELERY), "-A", "portal", "beat", "-l", "info", "-s", str(workdir / "schedule"), "--pidfile="],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
