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
import http.client
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.idp_server import IdPProcess
from tests.races.harness import GUNICORN, Call, RaceServer, _sources
from tests.workers import ROOT, CeleryWorker, RedisServer, wait_for

# The deployment split of issue 23 (contrib/): the agent API and the human pages in separate gunicorn pools.
API_WORKERS = 3
PAGES_WORKERS = 2
# What the fault server runs with besides RaceServer's environment: a short inline budget and short retry
# back-offs, so that a fault and its recovery fit in seconds (the shape of each fault is what matters: an IdP
# slower than the budget, or failing). The lease outlasts a delivery (a look-up and a create of
# REGISTRAR_CONNECTOR_TIMEOUT_SECONDS each), as settings.py requires.
FAULT_ENV = {
    "REGISTRAR_INLINE_DELIVERY_TIMEOUT_MS": "500",
    "REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS": "0.5",
    "REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS": "3",
    "REGISTRAR_CONNECTOR_TIMEOUT_SECONDS": "5",
    "REGISTRAR_OUTBOX_LEASE_SECONDS": "15",
}


# The suite's own servers listen on ports of this range (REGISTRAR_FAULT_PORTS, "first-last"), below the kernel's
# ephemeral range: a port found free cannot be taken by some process's outgoing connection before the server
# binds it (what a port from bind(0) allows on a busy machine).
_PORT_RANGE = os.environ.get("REGISTRAR_FAULT_PORTS", "18600-18699")
_next_port = int(_PORT_RANGE.split("-")[0])


def _fault_port() -> int:
    """The next port of the range that nothing listens on."""
    global _next_port
    first, last = (int(part) for part in _PORT_RANGE.split("-"))
    for _ in range(last - first + 1):
        port, _next_port = _next_port, (_next_port + 1 if _next_port < last else first)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE} (REGISTRAR_FAULT_PORTS)")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"no {name} binary (looked under /usr/lib/postgresql/*/bin and on PATH)")
    return found[-1]


class PostgresServer:
    """A throw-away PostgreSQL cluster on ``127.0.0.1:<port>`` with trust authentication for ``postgres``."""

    def __init__(self) -> None:
        self.port = _fault_port()
        self.root = Path(tempfile.mkdtemp(prefix="registrar-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self.root, self._user)
        self.extra_options = ""  # more server options (" -c name=value …"), kept across restarts

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
        options += " -c synchronous_commit=off -c full_page_writes=off" + self.extra_options
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
    idp_process: IdPProcess
    proxy: FaultProxy

    """The race suite's server on the PostgreSQL of the test's own, split as the recipes split it.

    Two gunicorn pools: the agent API (``url``, :data:`API_WORKERS` sync workers) and the human pages
    (``pages_url``, :data:`PAGES_WORKERS`), as the reverse proxy of contrib/ routes ``/oauth2/`` and ``/api/`` to
    one and everything else to the other; a Celery worker and a private Redis as in RaceServer.
    """

    def __init__(self, *, postgres: PostgresServer, **kwargs) -> None:
        super().__init__(admin_url=postgres.admin_url, **kwargs)
        self.postgres = postgres
        self.port = _fault_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis = RedisServer(port=_fault_port())
        self.pages_port = _fault_port()
        self.pages_url = f"http://127.0.0.1:{self.pages_port}"
        self.pools: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        return super().env() | FAULT_ENV

    def drop_database(self) -> None:  # the whole cluster goes with the test
        pass

    def start_services(self) -> None:
        self.redis.start()
        self._stack.callback(self.redis.stop)
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        for name, port, workers in (("api", self.port, API_WORKERS), ("pages", self.pages_port, PAGES_WORKERS)):
            self.pools[name] = self._start_pool(name, port, workers)
        self.gunicorn = self.pools["api"]  # what RaceServer's checks look at
        for url in (self.url, self.pages_url):
            wait_for(lambda url=url: self._answers(url), timeout=60, what=f"gunicorn on {url}", interval=0.2)
        self._warm_up()
        self.start_worker()

    def _start_pool(self, name: str, port: int, workers: int) -> subprocess.Popen:
        log = (self.work_dir / f"gunicorn-{name}.log").open("wb")
        self._stack.callback(log.close)
        process = subprocess.Popen(
            [str(GUNICORN), "portal.wsgi:application", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
            + ["--timeout", "120", "--graceful-timeout", "5", "--log-level", "warning"],
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._stack.callback(self._stop_pool, process)
        return process

    @staticmethod
    def _stop_pool(process: subprocess.Popen) -> None:
        if process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def _answers(self, url: str) -> bool:
        for name, process in self.pools.items():
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn ({name}) exited: {self.log_tail()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _warm_up(self) -> None:
        for url, workers in ((self.url, API_WORKERS), (self.pages_url, PAGES_WORKERS)):
            for _ in range(3):
                with httpx.Client(timeout=30) as http:
                    threads = [
                        threading.Thread(target=_ignore, args=(http.get, f"{url}/readyz")) for _ in range(4 * workers)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()

    def start_worker(self) -> CeleryWorker:
        """A Celery worker (again, after a kill: what ``Restart=always`` does)."""
        if self.celery is None:
            self._stack.callback(lambda: self.celery and self.celery.stop())
        self.celery = CeleryWorker("faults", env=self.env() | {"LOG_LEVEL": "INFO"}, concurrency=4)
        self.celery.start(ready_timeout=60)
        return self.celery

    def log_tail(self, chars: int = 4000) -> str:
        logs = sorted(self.work_dir.glob("gunicorn-*.log"))
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-chars:] for p in logs) or "no log"

    def log_mark(self) -> dict[Path, int]:
        return {p: p.stat().st_size for p in self.work_dir.glob("gunicorn-*.log")}

    def log_since(self, mark: dict[Path, int]) -> str:
        """What the web pools logged since ``mark`` (:meth:`log_mark`)."""
        parts = []
        for path in sorted(self.work_dir.glob("gunicorn-*.log")):
            with path.open("rb") as log:
                log.seek(mark.get(path, 0))
                parts.append(log.read().decode(errors="replace"))
        return "\n".join(parts)

    def probe(self, path: str) -> int:
        """``GET path`` straight from loopback (a probe: /healthz, /readyz); the status, or 0 on no answer."""
        try:
            return httpx.get(f"{self.url}{path}", timeout=10).status_code
        except httpx.HTTPError:
            return 0

    def nudge_outbox(self) -> None:
        """What beat's ``requeue-outbox`` does every 15 s: queue every due outbox entry for the worker."""
        self.send_tasks("inventory.tasks.requeue_outbox", 1)


def _ignore(fun, *args) -> None:
    with contextlib.suppress(httpx.HTTPError):
        fun(*args)


# --- a faulty IdP ----------------------------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a caller that hung up (its timeout, a cut)
        pass


class FaultProxy:
    """An HTTP proxy in front of the test IdP that Registrar's connection points at, with a fault switch.

    ``pass``: forward as is. ``slow``: forward at once, answer ``delay`` seconds later (the IdP has acted by
    then: a caller that gives up early must not create twice). ``error``: answer ``status`` without forwarding.
    ``down``: the port is closed (connections refused, as when the IdP process is stopped; the IdP behind keeps
    its memory, so what it holds can be counted after the outage).
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.port = _fault_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "pass"
        self.delay = 0.0
        self.status = 503
        self.calls: Counter = Counter()  # requests seen per mode
        self._server: ThreadingHTTPServer | None = None
        self._open: set = set()  # accepted connections (kept alive by Registrar's connection pools)
        self._lock = threading.Lock()

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._open.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._open.discard(self.connection)
                super().finish()

            def _handle(self) -> None:
                proxy.calls[proxy.mode] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.mode == "error":
                    payload = b'{"error":"server_error"}'
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                    headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                if proxy.mode == "slow":
                    time.sleep(proxy.delay)
                with contextlib.suppress(OSError):  # the caller gave up waiting (its timeout): nobody to answer
                    self._answer(answer, payload)

            def _answer(self, answer: http.client.HTTPResponse, payload: bytes) -> None:
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening and cut every open connection, as a stopped IdP process would."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def set(self, mode: str, *, delay: float = 0.0, status: int = 503) -> None:
        if mode == "down":
            self.close()
        elif self._server is None:
            self.start()
        self.mode, self.delay, self.status = mode, delay, status


def build_fault_server(postgres: PostgresServer) -> FaultServer:
    """A started :class:`FaultServer` on ``postgres``: migrated, the scope catalogue, the test IdP behind a
    :class:`FaultProxy` as its default IdP, and no per-owner cap. The caller stops it (``server.stop()``)."""
    from django.conf import settings

    from tests.conftest import CATALOGUE
    from tests.idp_server import IdPProcess
    from tests.provisioning import connection_for

    server = FaultServer(
        postgres=postgres,
        database=f"registrar_faults_{secrets.token_hex(4)}",
        secret_key=settings.SECRET_KEY,
        encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
        rates={"token": "100000/h", "address": "100000/h"},
    )
    try:
        server.create_database()
        idp = IdPProcess(port=_fault_port()).start()
        server.push(idp.stop)
        proxy = FaultProxy(idp.issuer).start()
        server.push(proxy.close)
        server.idp_process, server.proxy = idp, proxy
        with using_server(server.database_url):
            from approvals.models import Policy
            from tests.factories import IdPFactory, ScopeFactory

            for name, sensitivity, category in CATALOGUE:
                ScopeFactory(name=name, sensitivity=sensitivity, category=category)
            server.seed_idp = IdPFactory(name="faults-dry-run")
            # Registrar reaches the real test IdP through the proxy; tests count what the IdP holds directly.
            connection = connection_for(idp, name="faults-idp", is_default=True)
            connection.config = {
                key: value.replace(idp.issuer, proxy.url) if key != "issuer" else value
                for key, value in connection.config.items()
            }
            connection.save(update_fields=["config"])
            server.idp = connection
            # The load registers hundreds of clients for one owner; the per-owner cap is not what is under test.
            policy = Policy.objects.get(is_active=True)
            policy.thresholds = {**policy.thresholds, "max_live_clients_per_owner": 10**9}
            policy.save(update_fields=["thresholds"])
        server.start_services()
    except BaseException:
        server.stop()
        raise
    return server


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
    took: float = 0.0  # seconds from sending to the answer


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
        self.prefix = f"fault-{secrets.token_hex(3)}-"  # this load's client names: unique within the session

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
        # People reach the pages pool, agents the API pool (one server for both on a RaceServer).
        base_url = getattr(self.server, "pages_url", self.server.url) if kind == "person" else self.server.url
        with httpx.Client(base_url=base_url, transport=transport, timeout=60, cookies=cookies) as http:
            while not self._stop.is_set():
                with self._lock:
                    name = f"{self.prefix}{next(self._serial)}" if kind == "agent" else ""
                call = self.agent_call(name) if kind == "agent" else self.person_call
                sent = time.monotonic()
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
                        time.monotonic() - sent,
                    )
                except httpx.HTTPError as exc:
                    outcome = Outcome(kind, time.monotonic(), 0, "", "", repr(exc), name, time.monotonic() - sent)
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(self.pause)

    def statuses(self, kind: str | None = None, *, after: float = 0.0) -> Counter:
        return Counter(o.status for o in self.outcomes if (kind is None or o.kind == kind) and o.at >= after)

    def between(self, kind: str, start: float, end: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.kind == kind and start <= o.at < end]

    def intake_rate(self, start: float, end: float) -> float:
        """Registrations accepted (201 or 202) per second between ``start`` and ``end``."""
        return sum(1 for o in self.between("agent", start, end) if o.status in (201, 202)) / (end - start)

    def person_p95(self, start: float, end: float) -> float:
        """The 95th percentile of the people's page times between ``start`` and ``end`` (seconds)."""
        return percentile([o.took for o in self.between("person", start, end)], 95)

    def told(self) -> set[str]:
        """The agents' client names that were answered 201 or 202."""
        return {o.name for o in self.outcomes if o.kind == "agent" and o.status in (201, 202)}

    def wait_for(self, predicate: Callable[[Outcome], bool], *, after: float, timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = next((o for o in self.outcomes if o.at >= after and predicate(o)), None)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no matching answer within {timeout}s; since then: {self.statuses(after=after)}")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ranked = sorted(values)
    return ranked[max(0, math.ceil(pct / 100 * len(ranked)) - 1)]


def settle_at_idp(server: FaultServer, load: Load, *, timeout: float = 60.0) -> tuple[set[str], Counter]:
    """After a fault: nudge the outbox as beat would (every 2 s) until every client the load's agents were told
    about (201/202) is active at the IdP, or ``timeout``. Returns the told names still not active, and how many
    clients of the load the IdP holds per name (counted at the IdP itself, not through the proxy)."""
    from django.db import connection

    from inventory.choices import ClientState
    from inventory.models import Client
    from tests.provisioning import idp_clients

    told = load.told()
    deadline = time.monotonic() + timeout
    missing = told
    while True:
        connection.close()  # a fresh connection per poll (the database may have been restarted)
        active = set(
            Client.objects.filter(
                name__startswith=load.prefix, state=ClientState.ACTIVE, idp_client_id__isnull=False
            ).values_list("name", flat=True)
        )
        missing = told - active
        if not missing or time.monotonic() > deadline:
            break
        server.nudge_outbox()
        time.sleep(2.0)
    at_idp = Counter(
        c.get("client_name")
        for c in idp_clients(server.idp_process)
        if str(c.get("client_name")).startswith(load.prefix)
    )
    return missing, at_idp


def heartbeat_seen(queue: str):
    from django.db import connection

    from portal.models import Heartbeat

    connection.close()  # a fresh connection per poll: this process shares nothing with the server
    return Heartbeat.objects.filter(name=f"queue:{queue}").first()


def assert_clean_answers(load: Load, fault_server) -> None:
    wrong = [o for o in load.outcomes if o.status not in ((201, 202) if o.kind == "agent" else (200,))]
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:3]}; {fault_server.log_tail(3000)}"


def assert_all_at_idp_once(load: Load, fault_server) -> None:
    missing, at_idp = settle_at_idp(fault_server, load, timeout=60)
    assert not missing, f"{len(missing)} told clients not active at the IdP after 60 s: {sorted(missing)[:5]}"
    told = load.told()
    duplicated = {name: n for name, n in at_idp.items() if n > 1}
    assert not duplicated, f"duplicated at the IdP: {duplicated}"
    assert set(at_idp) == told, f"at the IdP but never told: {sorted(set(at_idp) - told)[:5]}"
