"""The race suite's machinery: Registrar as a real multi-process server, and barrier-synchronised bursts at it.

:class:`RaceServer` runs what production runs, on loopback: ``gunicorn`` with four sync workers (each its own
process and database connection) and a ``celery worker`` over a private ``redis-server`` (broker and cache,
so the rate limiter is the Redis one), against a fresh PostgreSQL database of its own that it creates,
migrates and drops. Its default identity provider is the real test IdP (``tests/idp``).

:meth:`RaceServer.burst` sends one HTTP request per :class:`Call` from its own thread; the threads meet at a
``threading.Barrier`` and send together. Each thread connects from its own loopback address (127.x.y.z), so
the per-address rate limit of one burst never spills into another. Requests are answered as gunicorn's
workers free up; the database decides what the workers race for.

Nothing here imports pytest; fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.workers import ROOT, CeleryWorker, RedisServer, _free_port, wait_for

GUNICORN = Path(sys.executable).with_name("gunicorn")
WEB_WORKERS = 4
CELERY_CONCURRENCY = 4


# --- what a burst sends and gets back -------------------------------------------------------------------------


@dataclass
class Call:
    """One HTTP request of a burst. ``cookies``/``headers`` carry who is calling (see :class:`Person`)."""

    method: str
    path: str
    json: Any = None
    data: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    source: str | None = None  # the loopback address to connect from; default: one of the burst's own


@dataclass
class Answer:
    call: Call
    status: int
    text: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.text)


class Burst(list[Answer]):
    """The answers of one burst, in the order of its calls."""

    def statuses(self) -> Counter:
        return Counter(a.status for a in self)

    def count(self, *statuses: int) -> int:
        return sum(1 for a in self if a.status in statuses)

    def with_status(self, *statuses: int) -> list[Answer]:
        return [a for a in self if a.status in statuses]

    def __str__(self) -> str:  # what an assertion message shows
        seen: dict[tuple[int, str], int] = Counter((a.status, a.text[:160]) for a in self)
        return "; ".join(f"{n} x {status} {text!r}" for (status, text), n in seen.items())


@dataclass
class Person:
    """A signed-in person: their session cookie and a CSRF token, as a browser would hold them."""

    username: str
    session_key: str
    csrf: str

    def post(self, path: str, data: dict[str, Any] | None = None) -> Call:
        return Call(
            "POST",
            path,
            data=data or {},
            headers={"X-CSRFToken": self.csrf},
            cookies={"sessionid": self.session_key, "csrftoken": self.csrf},
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_token(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


_source_blocks = itertools.count(1)


def fresh_source() -> str:
    """A loopback address no call has used yet (for calls that must share one, e.g. a per-address limit)."""
    return _sources(1)[0]


def _sources(n: int) -> list[str]:
    """``n`` loopback addresses nobody has used yet in this process (127.<block>.<host>)."""
    block = next(_source_blocks)
    return [f"127.{block // 250 + 1}.{block % 250}.{i + 1}" for i in range(n)]


# --- the server ---------------------------------------------------------------------------------------------


class RaceServer:
    """gunicorn (4 sync workers) + a Celery worker + a private Redis on a database of its own; see module doc."""

    def __init__(
        self, *, admin_url: str, database: str, secret_key: str, encryption_key: str, rates: dict[str, str]
    ) -> None:
        self.admin_url = admin_url  # a maintenance database URL (postgres://…/postgres)
        self.database = database
        self.secret_key = secret_key
        self.encryption_key = encryption_key
        from portal.tlog.keys import log_signer

        self.log_key = log_signer().encoded  # the test process's own key
        self.rates = rates
        self.scim_token = "scim-" + secrets.token_urlsafe(24)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = Path(tempfile.mkdtemp(prefix="registrar-races-"))
        self.mail_dir = self.work_dir / "mail"
        self.redis = RedisServer()
        self.gunicorn: subprocess.Popen | None = None
        self.celery: CeleryWorker | None = None
        self._stack = contextlib.ExitStack()

    @property
    def database_url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.database

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis.url,
                "DEBUG": "true",
                "SECRET_KEY": self.secret_key,  # the test process writes the sessions the server reads
                "REGISTRAR_ENCRYPTION_KEY": self.encryption_key,  # and the IdP credentials
                "REGISTRAR_LOG_SIGNING_KEY": self.log_key,  # the test process verifies the log the server signs
                "REGISTRAR_DEMO_MODE": "false",
                "REGISTRAR_DATA_DIR": str(self.work_dir / "data"),
                "REGISTRAR_SCIM_TOKEN": self.scim_token,
                "REGISTRAR_REGISTER_RATE_PER_TOKEN": self.rates["token"],
                "REGISTRAR_REGISTER_RATE_PER_IP": self.rates["address"],
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "EMAIL_FILE_PATH": str(self.mail_dir),
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
        )
        return env

    # -- lifecycle -------------------------------------------------------------------------------------------

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._stack.callback(self.drop_database)
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrating {self.database} failed:\n{migrate.stderr[-3000:]}")

    def drop_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def start_services(self) -> None:
        """Redis first (the processes connect at start), then the web workers and the Celery worker."""
        self.redis.start()
        self._stack.callback(self.redis.stop)
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        log = (self.work_dir / "gunicorn.log").open("wb")
        self._stack.callback(log.close)
        self.gunicorn = subprocess.Popen(
            [
                str(GUNICORN),
                "portal.wsgi:application",
                "--workers",
                str(WEB_WORKERS),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "120",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._stack.callback(self._stop_gunicorn)
        wait_for(
            self._healthy,
            timeout=60,
            what=f"gunicorn on {self.url} (log {self.work_dir / 'gunicorn.log'})",
            interval=0.2,
        )
        self._warm_up()
        # LOG_LEVEL INFO: the worker's " ready." line, which CeleryWorker waits for, is an INFO line.
        self.celery = CeleryWorker("races", env=self.env() | {"LOG_LEVEL": "INFO"}, concurrency=CELERY_CONCURRENCY)
        self.celery.start(ready_timeout=60)
        self._stack.callback(self.celery.stop)

    def _warm_up(self) -> None:
        """Bring every web worker past its first request (URLconf, views, database connection) before a race.

        A cold worker spends a few hundred milliseconds on its first request; a burst sent to a server with one
        warm worker is then mostly served by that worker one request after another, and the race the test is
        about never happens (a spawn test passed with its guard removed). ``/readyz`` loads the URLconf and
        opens the database connection; a few bursts larger than the worker count reach every worker."""
        for _ in range(3):
            self.burst([Call("GET", "/readyz") for _ in range(4 * WEB_WORKERS)], timeout=30)  # any answer will do

    def _healthy(self) -> bool:
        if self.gunicorn is not None and self.gunicorn.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _stop_gunicorn(self) -> None:
        if self.gunicorn is None or self.gunicorn.poll() is not None:
            return
        os.killpg(self.gunicorn.pid, signal.SIGTERM)
        try:
            self.gunicorn.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.gunicorn.pid, signal.SIGKILL)
            self.gunicorn.wait(timeout=10)

    def push(self, callback) -> None:
        """Run ``callback`` when the server stops (before the database is dropped)."""
        self._stack.callback(callback)

    def stop(self) -> None:
        self._stack.close()

    def log_tail(self, chars: int = 4000) -> str:
        path = self.work_dir / "gunicorn.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "no log"

    # -- bursts ----------------------------------------------------------------------------------------------

    def burst(self, calls: Sequence[Call], *, timeout: float = 120.0) -> Burst:
        """Send ``calls`` at once: one thread each, released together by a barrier. Answers in call order.

        A transport error (not an HTTP status) fails the burst: a refusal must be an answer, never a dropped
        connection.
        """
        barrier = threading.Barrier(len(calls))
        answers: list[Answer | BaseException | None] = [None] * len(calls)

        def send(slot: int, call: Call, source: str) -> None:
            transport = httpx.HTTPTransport(local_address=source)
            try:
                with httpx.Client(
                    base_url=self.url,
                    transport=transport,
                    timeout=timeout,
                    cookies=call.cookies,
                    follow_redirects=False,
                ) as http:
                    request = http.build_request(
                        call.method, call.path, json=call.json, data=call.data, headers=call.headers
                    )
                    barrier.wait(timeout=30)
                    response = http.send(request)
                    answers[slot] = Answer(call, response.status_code, response.text, dict(response.headers))
            except BaseException as exc:  # noqa: BLE001 - reported below, with every other thread's outcome
                answers[slot] = exc

        threads = [
            threading.Thread(target=send, args=(i, call, call.source or source), daemon=True)
            for i, (call, source) in enumerate(zip(calls, _sources(len(calls)), strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 60)
        failures = [a for a in answers if not isinstance(a, Answer)]
        if failures:
            raise AssertionError(
                f"{len(failures)} of {len(calls)} calls got no HTTP answer: {failures[:3]!r}; "
                f"server log: {self.log_tail(1500)}"
            )
        burst = Burst(answers)  # type: ignore[arg-type]
        errors = burst.with_status(500, 502, 503, 504)
        if errors:
            raise AssertionError(f"server errors in the burst ({burst}); server log: {self.log_tail(3000)}")
        return burst

    def burst_same(self, call: Call, n: int) -> Burst:
        return self.burst([call] * n)

    def call(self, call: Call) -> Answer:
        """One request (set-up steps), from a loopback address of its own like every burst call."""
        return self.burst([call])[0]

    # -- worker side -----------------------------------------------------------------------------------------

    def send_tasks(self, name: str, n: int, *, args: Sequence[Any] = ()) -> None:
        """Queue ``n`` copies of a Celery task at once (a beat that fires twice, retries, many schedulers)."""
        from celery import Celery

        sender = Celery("races-sender", broker=self.redis.url)
        try:
            for _ in range(n):
                sender.send_task(name, args=list(args))
        finally:
            sender.close()

    def mails(self) -> list[str]:
        """Every message the server's processes sent (the file e-mail backend writes one file per connection)."""
        messages = []
        for path in sorted(self.mail_dir.glob("*.log")):
            messages.extend(m for m in path.read_text(errors="replace").split("-" * 79 + "\n") if m.strip())
        return messages


@contextlib.contextmanager
def using_database(name: str) -> Iterator[None]:
    """Point this process's default connection at database ``name`` (new connections in every thread too)."""
    from django.db import connections

    connection = connections["default"]
    original = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original


def wait_until(predicate, *, what: str, timeout: float = 60.0):
    """For work the Celery worker finishes in the background (deliveries, tasks)."""
    return wait_for(predicate, timeout=timeout, what=what, interval=0.2)
