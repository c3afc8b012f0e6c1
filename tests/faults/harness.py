"""The fault suite's machinery: a PostgreSQL of the test's own, the race suite's server on it, and a steady load.

:class:`PostgresServer` is ``initdb`` + ``pg_ctl`` on a free loopback port in a temporary directory (as the
``postgres`` user when the tests run as root, since PostgreSQL refuses to run as root), so a test can stop and
start the database under a running server. :class:`FaultServer` is :class:`tests.races.harness.RaceServer`
(gunicorn with four sync workers, a Celery worker, a private redis-server) pointed at that PostgreSQL.
:class:`Load` keeps agents registering and people loading pages from threads of their own, each call from a
loopback address of its own, and records every answer with the time it came back.

Nothing here imports pytest; fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.races.harness import Call, RaceServer, _sources
from tests.workers import _free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"no {name} binary (looked under /usr/lib/postgresql/*/bin and on PATH)")
    return found[-1]


class PostgresServer:
    """A throw-away PostgreSQL cluster on ``127.0.0.1:<port>`` with trust authentication for ``postgres``."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="registrar-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self.root, self._user)

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(list(args), user=self._user, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}\n{self.log_tail()}")

    def init(self) -> PostgresServer:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c max_connections=60"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: what a restart does (sessions terminated, clean shutdown); ``immediate``: a crash."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class FaultServer(RaceServer):
    """The race suite's server (gunicorn ×4, Celery, a private Redis) on the PostgreSQL of the test's own."""

    def __init__(self, *, postgres: PostgresServer, **kwargs) -> None:
        super().__init__(admin_url=postgres.admin_url, **kwargs)
        self.postgres = postgres

    def drop_database(self) -> None:  # the whole cluster goes with the test
        pass

    def probe(self, path: str) -> int:
        """``GET path`` straight from loopback (a probe: /healthz, /readyz); the status, or 0 on no answer."""
        try:
            return httpx.get(f"{self.url}{path}", timeout=10).status_code
        except httpx.HTTPError:
            return 0


@contextlib.contextmanager
def using_server(url: str) -> Iterator[None]:
    """Point this process's default connection at ``url``'s host, port and database (all threads)."""
    from urllib.parse import urlsplit

    from django.db import connections

    parts = urlsplit(url)
    connection = connections["default"]
    keys = ("HOST", "PORT", "NAME", "USER", "PASSWORD")
    original = {key: connection.settings_dict.get(key) for key in keys}
    connection.close()
    connection.settings_dict.update(
        HOST=parts.hostname, PORT=str(parts.port), NAME=parts.path.lstrip("/"), USER=parts.username, PASSWORD=""
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(original)


# --- load -----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "agent" or "person"
    at: float  # monotonic time the answer came back
    status: int  # 0: no HTTP answer (a transport error)
    content_type: str
    retry_after: str
    text: str
    name: str = ""  # the agent's client_name


class Load:
    """``agents`` threads registering (one unique client_name per call) and ``people`` threads loading a page."""

    def __init__(
        self,
        server: RaceServer,
        *,
        agent_call: Callable[[str], Call],
        person_call: Call,
        agents: int = 4,
        people: int = 2,
        pause: float = 0.05,
    ) -> None:
        self.server = server
        self.agent_call = agent_call
        self.person_call = person_call
        self.plan = ["agent"] * agents + ["person"] * people
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._serial = iter(range(1_000_000))

    def __enter__(self) -> Load:
        for kind, source in zip(self.plan, _sources(len(self.plan)), strict=True):
            thread = threading.Thread(target=self._run, args=(kind, source), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self, kind: str, source: str) -> None:
        transport = httpx.HTTPTransport(local_address=source)
        cookies = self.person_call.cookies if kind == "person" else {}
        with httpx.Client(base_url=self.server.url, transport=transport, timeout=60, cookies=cookies) as http:
            while not self._stop.is_set():
                with self._lock:
                    name = f"fault-agent-{next(self._serial)}" if kind == "agent" else ""
                call = self.agent_call(name) if kind == "agent" else self.person_call
                try:
                    response = http.request(call.method, call.path, json=call.json, headers=call.headers)
                    outcome = Outcome(
                        kind,
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("content-type", ""),
                        response.headers.get("retry-after", ""),
                        response.text[:2000],
                        name,
                    )
                except httpx.HTTPError as exc:
                    outcome = Outcome(kind, time.monotonic(), 0, "", "", repr(exc), name)
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(self.pause)

    def statuses(self, kind: str | None = None, *, after: float = 0.0) -> Counter:
        return Counter(o.status for o in self.outcomes if (kind is None or o.kind == kind) and o.at >= after)

    def wait_for(self, predicate: Callable[[Outcome], bool], *, after: float, timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = next((o for o in self.outcomes if o.at >= after and predicate(o)), None)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no matching answer within {timeout}s; since then: {self.statuses(after=after)}")
