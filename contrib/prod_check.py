"""``make prod-check``: start Registrar's production configuration exactly as the systemd units do, and put a
registration, an approval and a sweep through it.

    .venv/bin/python contrib/prod_check.py [--keep]

What it does, in order (any failure stops it with the step, the reason and the processes' log tails):

1. Secrets generated for this run (SECRET_KEY, a Fernet REGISTRAR_ENCRYPTION_KEY, a metrics token); the
   environment built from ``contrib/registrar.env.example`` (its active lines) with this run's database, Redis,
   secrets and directories filled in; DEBUG off, HTTPS redirect on, hashed static files — production shape.
2. Its own PostgreSQL database (``registrar_prodcheck_<random>``), its own ``redis-server`` on a free port, and the
   project's OpenID provider (``tests/idp``) as the IdP clients are provisioned into.
3. ``manage.py migrate``, ``collectstatic``, ``check --deploy`` — the install steps of docs/deploy.md.
4. Seed: scope catalogue, the IdP connection, an owner with an initial access token, an approver with an API token.
5. The web server, one Celery worker and beat, each started with the ``ExecStart`` and ``Environment`` lines of
   ``contrib/systemd/registrar-{web,worker@,beat}.service`` (paths mapped onto this checkout and its venv).
6. Checks, through the front door the way a TLS proxy forwards (``Host`` + ``X-Forwarded-Proto: https``):
   ``/healthz`` and ``/readyz`` from loopback; a static file served by WhiteNoise (hashed name, compressed,
   immutable); a registration answered **201** (the client exists at the IdP) and one answered **202**; its
   **approval through the management API**, after which the worker creates it at the IdP; a short-lived client
   **expired by beat's sweep** and removed from the IdP; ``/metrics`` with the token (and refused without),
   the worker's own metrics (IdP calls); a forged Host refused; the audit chain verified.
7. Everything stopped and the database dropped (``--keep`` leaves the database and logs for a post-mortem).

Needs PostgreSQL on 127.0.0.1 (``PRODCHECK_ADMIN_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/postgres``),
``redis-server`` and Node.js with the test IdP's packages (``make idp-deps``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "contrib"]
sys.path.insert(0, str(ROOT))

UNITS = ROOT / "contrib" / "systemd"
ENV_EXAMPLE = ROOT / "contrib" / "registrar.env.example"
VENV_BIN = Path(sys.executable).parent
INSTALL_DIR = "/opt/registrar"
ADMIN_URL = os.environ.get("PRODCHECK_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PUBLIC_HOST = "registrar.prodcheck.test"
IDP_NAME = "prodcheck-idp"
JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "kid": "k1",
            "x": "gV1J6obKVMtk6b-WBzqbYdKYHiQKHw4IcoqYh1ofjZE",
            "y": "LT-DhnSDk1z4LY6Q2_n8-SnN_q8yPSL_S7iUyB5dlhU",
        }
    ]
}
SCOPES = (("tickets:read", "low"), ("tickets:write", "medium"), ("repo:write", "high"))


# Celery prints its shutdown notice straight to stdout, not through logging.
CELERY_PRINTS = ("worker: Warm shutdown", "worker: Cold shutdown")


class CheckFailed(AssertionError):
    """A step of the check did not hold."""


def step(message: str) -> None:
    print(f"prod-check: {message}", flush=True)


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- the units -------------------------------------------------------------------------------------------------


@dataclass
class UnitCommand:
    unit: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def read_unit(name: str, *, instance: str = "", run_dir: Path) -> UnitCommand:
    """A unit's ExecStart and Environment lines, with /opt/registrar mapped onto this checkout, its venv's
    binaries, /run onto ``run_dir`` and the specifiers %i (instance) and %H (host name) expanded."""
    text = (UNITS / name).read_text()

    def expand(value: str) -> str:
        value = value.replace("%i", instance).replace("%H", socket.gethostname())
        value = value.replace(f"{INSTALL_DIR}/venv/bin/", f"{VENV_BIN}/").replace(f"{INSTALL_DIR}/", f"{ROOT}/")
        return re.sub(r"(?<![\w/])/run/", f"{run_dir}/", value)

    argv: list[str] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = [expand(arg) for arg in shlex.split(value)]
        elif key == "Environment":
            name_, _, val = value.partition("=")
            env[name_] = expand(val)
        elif key == "RuntimeDirectory":
            (run_dir / expand(value)).mkdir(parents=True, exist_ok=True)
    expect(argv, f"{name} has no ExecStart")
    return UnitCommand(name, argv, env)


def example_environment() -> dict[str, str]:
    """The active ``KEY=value`` lines of contrib/registrar.env.example (what an install starts from)."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


# --- processes -------------------------------------------------------------------------------------------------


class Service:
    def __init__(self, command: UnitCommand, env: dict[str, str], logs: Path) -> None:
        self.command = command
        self.env = {**env, **command.env}
        self.log_path = logs / (command.unit.replace("@", "-") + ".log")
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """As systemd's KillMode=mixed: SIGTERM to the main process (gunicorn and Celery stop their children
        gracefully), SIGKILL to whatever is left after the timeout."""
        if self.process is None:
            return
        try:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def tail(self, chars: int = 2500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_worker_instance() -> str:
    """A worker instance name 01-99 whose metrics port (91<instance>, as the unit sets it) is free here."""
    for number in range(1, 100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", 9100 + number))
            except OSError:
                continue
            return f"{number:02d}"
    raise CheckFailed("no free port in 9101-9199 for the worker's metrics")


def wait_for(
    predicate: Callable[[], object], *, timeout: float, what: str, services: list[Service], interval: float = 0.5
) -> object:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for service in services:
            if not service.alive():
                raise CheckFailed(f"{service.command.unit} exited while waiting for {what}")
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - not there yet
            last_error = exc
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last_error})" if last_error else ""))


# --- HTTP ------------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def http(method: str, url: str, *, headers: dict[str, str] | None = None, body: object = None) -> Answer:
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with _OPENER.open(request, timeout=30) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


# --- the check -------------------------------------------------------------------------------------------------


class ProdCheck:
    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="registrar-prodcheck-"))
        self.run_dir = self.tmp / "run"
        self.logs = self.tmp / "logs"
        self.run_dir.mkdir()
        self.logs.mkdir()
        self.db_name = f"registrar_prodcheck_{secrets.token_hex(4)}"
        self.db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.metrics_token = secrets.token_urlsafe(32)
        self.services: list[Service] = []
        self.redis = None
        self.idp = None
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.worker_instance = free_worker_instance()

    # -- environment ----------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        from portal.tlog.note import generate_signer

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("DJANGO_", "DATABASE_", "REDIS_", "DEBUG", "REGISTRAR_", "CELERY_", "LOG_", "PROMETHEUS")
            )
        }
        env.update(example_environment())
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "DATABASE_URL": self.db_url,
                "REDIS_URL": self.redis.url,
                "SECRET_KEY": secrets.token_urlsafe(50),
                "REGISTRAR_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                "REGISTRAR_LOG_SIGNING_KEY": generate_signer(f"{PUBLIC_HOST}/audit-log").encoded,
                "REGISTRAR_METRICS_TOKEN": self.metrics_token,
                "ALLOWED_HOSTS": PUBLIC_HOST,
                "REGISTRAR_PUBLIC_URL": f"https://{PUBLIC_HOST}",
                "REGISTRAR_DATA_DIR": str(self.tmp / "data"),
                "STATIC_ROOT": str(self.tmp / "static"),
                "GUNICORN_BIND": f"127.0.0.1:{self.port}",
                "GUNICORN_WORKERS": "2",
                # Mail is the site's business; the check sends none.
                "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
                # A busy shared test machine can make the local IdP slower than the 2 s default budget; what is checked
                # is that the 201 path works, not how long the budget is.
                "REGISTRAR_INLINE_DELIVERY_TIMEOUT_MS": "10000",
                "PYTHONPATH": str(ROOT),
            }
        )
        if os.geteuid() == 0:
            # The units run as the user "registrar"; a test machine may run this as root, and Celery then prints a
            # warning about it (before logging is set up, so not as JSON) that the deployment never sees.
            env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"
        leftovers = sorted(key for key, value in env.items() if "CHANGE-ME" in value)
        expect(not leftovers, f"placeholders left in the environment: {', '.join(leftovers)}")
        expect("DEBUG" not in env, "the production check must not set DEBUG")
        return env

    def manage(self, env: dict[str, str], *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        expect(
            result.returncode == 0,
            f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}",
        )
        return result.stdout + result.stderr

    # -- setup ------------------------------------------------------------------------------------------

    def prepare(self) -> dict[str, str]:
        import psycopg

        from tests.idp_server import IdPProcess
        from tests.workers import RedisServer

        step(f"working directory {self.tmp}")
        self.redis = RedisServer().start()
        self.idp = IdPProcess().start()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        env = self.environment()
        Path(env["REGISTRAR_DATA_DIR"]).mkdir(mode=0o750)  # docs/deploy.md: install -d /var/lib/registrar
        step(f"database {self.db_name}, redis {self.redis.url}, IdP {self.idp.issuer}")
        self.manage(env, "migrate", "--noinput")
        self.manage(env, "collectstatic", "--noinput", "--verbosity", "0")
        self.manage(env, "check", "--deploy", "--fail-level", "ERROR")
        step("migrated, static files collected, deploy checks pass")
        return env

    def seed(self, env: dict[str, str]) -> dict[str, str]:
        """Catalogue, IdP connection, people, tokens — written through Django in this process."""
        os.environ.update(env)
        import django

        django.setup()
        from datetime import timedelta

        from django.contrib.auth.models import Group
        from django.utils import timezone

        from approvals.models import InitialAccessToken
        from inventory.models import IdPConnection, ScopeDefinition
        from portal.crypto import hash_token
        from portal.models import ApiToken, User

        for name, sensitivity in SCOPES:
            ScopeDefinition.objects.create(name=name, sensitivity=sensitivity, category="internal_tool")
        config, idp_secrets = self.idp.connector_config()
        IdPConnection.objects.create(name=IDP_NAME, kind="rfc7591", is_default=True, config=config, secrets=idp_secrets)
        owner = User.objects.create_user("olivia", "olivia@example.com", secrets.token_urlsafe(16))
        owner.groups.add(Group.objects.get(name="owner"))
        approver = User.objects.create_user("bob", "bob@example.com", secrets.token_urlsafe(16))
        approver.groups.add(Group.objects.get(name="approver"))
        access_token = "rat_prodcheck_" + secrets.token_urlsafe(24)
        InitialAccessToken.objects.create(
            owner=owner,
            purpose="production check",
            prefix=access_token[:12],
            token_hash=hash_token(access_token),
            allowed_scopes=["tickets:read", "tickets:write"],
            max_ttl_seconds=86400,
            max_uses=10,
            expires_at=timezone.now() + timedelta(hours=1),
        )
        api_token = "api_prodcheck_" + secrets.token_urlsafe(24)
        ApiToken.objects.create(
            user=approver, name="prod-check", prefix=api_token[:12], token_hash=hash_token(api_token)
        )
        step("seeded: catalogue, IdP connection, owner token, approver API token")
        return {"access": access_token, "api": api_token}

    def start_services(self, env: dict[str, str]) -> None:
        commands = [
            read_unit("registrar-web.service", run_dir=self.run_dir),
            read_unit("registrar-worker@.service", instance=self.worker_instance, run_dir=self.run_dir),
            read_unit("registrar-beat.service", run_dir=self.run_dir),
        ]
        for command in commands:
            self.services.append(Service(command, env, self.logs).start())
            step(f"started {command.unit}: {shlex.join(command.argv)}")

    # -- the checks -------------------------------------------------------------------------------------

    def front(self, method: str, path: str, **kwargs) -> Answer:
        """Through the front door, as the TLS proxy forwards it."""
        headers = {
            "Host": PUBLIC_HOST,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": "203.0.113.7",
            **kwargs.pop("headers", {}),
        }
        return http(method, self.base + path, headers=headers, **kwargs)

    def idp_client_ids(self) -> dict[str, str]:
        """registrar_id -> client_id of every client at the IdP (its admin listing)."""
        answer = http(
            "GET",
            self.idp.admin_clients_endpoint + "?limit=500",
            headers={"Authorization": f"Bearer {self.idp.admin_token}"},
        )
        expect(answer.status == 200, f"IdP admin listing answered {answer.status}")
        return {c.get("registrar_id"): c["client_id"] for c in answer.json()["clients"] if c.get("registrar_id")}

    def register(self, token: str, *, scope: str, ttl: int) -> Answer:
        body = {
            "client_name": f"prodcheck-{scope.replace(':', '-')}",
            "purpose": "production check",
            "scope": scope,
            "internal_only": True,
            "requested_ttl": ttl,
            "jwks": JWKS,
        }
        return self.front("POST", "/oauth2/register", headers={"Authorization": f"Bearer {token}"}, body=body)

    def run_checks(self, tokens: dict[str, str]) -> None:
        services = self.services
        wait_for(
            lambda: http("GET", f"{self.base}/healthz").status == 200, timeout=60, what="/healthz", services=services
        )
        step("/healthz 200 from loopback (no Host, plain HTTP: a probe)")
        ready = wait_for(
            lambda: (a := http("GET", f"{self.base}/readyz")).status == 200 and a.json(),
            timeout=60,
            what="/readyz 200",
            services=services,
        )
        for name in ("database", "cache", "broker", f"idp:{IDP_NAME}"):
            expect(
                ready["checks"].get(name, {}).get("status") == "ok",
                f"/readyz check {name}: {ready['checks'].get(name)}",
            )
        statuses = ", ".join(f"{name}={check['status']}" for name, check in ready["checks"].items())
        step(f"/readyz 200: {statuses}")

        # A short-lived client first, so beat's first expiry sweep (a minute after it starts) finds it due.
        short = self.register(tokens["access"], scope="tickets:read", ttl=20)
        expect(short.status == 201, f"short-lived registration answered {short.status}: {short.body[:500]!r}")
        short_id = short.json()["registration_client_uri"].rsplit("/", 1)[1]

        created = self.register(tokens["access"], scope="tickets:read", ttl=3600)
        expect(created.status == 201, f"low-risk registration answered {created.status}: {created.body[:500]!r}")
        info = created.json()
        expect(info["client_id"] and info["issuer"] == self.idp.issuer, f"201 body: {info}")
        created_id = info["registration_client_uri"].rsplit("/", 1)[1]
        expect(self.idp_client_ids().get(created_id) == info["client_id"], "the 201 client is not at the IdP")
        step(f"registration 201: {info['client_id']} exists at the IdP")

        pending = self.register(tokens["access"], scope="tickets:write", ttl=3600)
        expect(
            pending.status == 202 and pending.json()["status"] == "pending",
            f"medium-risk registration answered {pending.status}: {pending.body[:500]!r}",
        )
        pending_id = pending.json()["registration_client_uri"].rsplit("/", 1)[1]
        step(f"registration 202: {pending_id} waits for review")

        approved = self.front(
            "POST",
            f"/api/v1/requests/{pending_id}/approve/",
            body={"reason": "production check"},
            headers={"Authorization": f"Token {tokens['api']}"},
        )
        expect(
            approved.status == 200 and approved.json()["state"] == "approved",
            f"approval through the API answered {approved.status}: {approved.body[:500]!r}",
        )
        wait_for(
            lambda: pending_id in self.idp_client_ids(),
            timeout=60,
            what="the worker to create the approved client at the IdP",
            services=services,
        )
        step("approval through the management API: 200, and the worker created the client at the IdP")

        static = self.static_file()
        step(f"static file served by WhiteNoise: {static}")

        wait_for(
            lambda: short_id not in self.idp_client_ids(),
            timeout=150,
            interval=2,
            what="beat's expiry sweep to expire the short-lived client and the worker to remove it at the IdP",
            services=services,
        )
        step("sweep: the short-lived client expired (beat + worker) and is gone from the IdP")

        self.metrics(short_id)
        forged = http(
            "GET",
            f"{self.base}/accounts/login/",
            headers={"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"},
        )
        expect(forged.status == 400, f"a forged Host through the proxy answered {forged.status}, not 400")
        step("a forged Host header is refused (400)")
        out = self.manage(self.services[0].env, "verify_audit")
        step(out.strip().splitlines()[-1])

    def static_file(self) -> str:
        page = self.front("GET", "/accounts/login/")
        expect(page.status == 200, f"login page answered {page.status}")
        match = re.search(rb'href="(/static/[^"]+\.[0-9a-f]{12}\.css)"', page.body)
        expect(match, "the login page links no hashed stylesheet (manifest storage not in use?)")
        path = match.group(1).decode()
        answer = self.front("GET", path, headers={"Accept-Encoding": "gzip"})
        expect(answer.status == 200, f"{path} answered {answer.status}")
        expect(answer.headers.get("content-encoding") == "gzip", f"{path} not served compressed: {answer.headers}")
        expect("immutable" in answer.headers.get("cache-control", ""), f"{path} cache headers: {answer.headers}")
        return f"{path} (gzip, {answer.headers['cache-control']})"

    def metrics(self, expired_id: str) -> None:
        refused = self.front("GET", "/metrics")
        expect(refused.status == 401, f"/metrics without the token answered {refused.status}, not 401")

        def scrape():
            answer = self.front("GET", "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"})
            expect(answer.status == 200, f"/metrics with the token answered {answer.status}")
            return parse_metrics(answer.body.decode())

        def heartbeat_seen():
            values = scrape()
            return (
                values
                if values.get(("registrar_worker_heartbeat_age_seconds", (("queue", "celery"),)), float("inf")) < 120
                else None
            )

        values = wait_for(
            heartbeat_seen, timeout=90, interval=3, what="a worker heartbeat in /metrics", services=self.services
        )
        created = values.get(("registrar_registrations_total", (("channel", "token"), ("outcome", "created"))), 0)
        pending = values.get(("registrar_registrations_total", (("channel", "token"), ("outcome", "pending"))), 0)
        expect(created == 2 and pending == 1, f"registrations counted: created={created} pending={pending}")
        depth = sum(v for (name, _), v in values.items() if name == "registrar_review_queue_depth")
        expect(depth == 0, f"review queue depth {depth} after the approval")
        expect(
            ("registrar_sweep_last_run_timestamp_seconds", (("sweep", "expired"),)) in values,
            "no expiry sweep run in /metrics",
        )
        expect(values.get(("registrar_outbox_entries", (("status", "dead"),))) == 0, "dead-lettered outbox entries")
        step(
            f"/metrics: 401 without the token; with it registrations created={created:.0f} pending={pending:.0f}, "
            f"queue depth 0, heartbeat and sweep runs present"
        )

        worker = http("GET", f"http://127.0.0.1:91{self.worker_instance}/metrics")
        expect(worker.status == 200, f"worker metrics answered {worker.status}")
        worker_values = parse_metrics(worker.body.decode())
        calls = sum(
            v
            for (name, labels), v in worker_values.items()
            if name == "registrar_idp_requests_total"
            and dict(labels).get("connection") == IDP_NAME
            and dict(labels).get("outcome") == "ok"
        )
        expect(calls >= 2, f"the worker counted {calls} successful IdP calls (create + delete expected)")
        step(f"worker /metrics: {calls:.0f} successful IdP calls to {IDP_NAME}")

    # -- teardown ---------------------------------------------------------------------------------------

    def stop(self, failed: bool) -> None:
        for service in reversed(self.services):
            service.stop()
        if failed:
            for service in self.services:
                print(f"--- {service.command.unit} (log {service.log_path}) ---\n{service.tail()}", file=sys.stderr)
        if self.idp is not None:
            self.idp.stop()
        if self.redis is not None:
            self.redis.stop()
        if not self.keep:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001, S110 - Django may never have been set up
                pass
            import psycopg

            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        else:
            step(f"kept database {self.db_name} and logs in {self.logs}")

    def check_logs(self) -> None:
        """Every line the three processes wrote is one JSON object, and the worker's task lines carry their task id
        and the id of the request that enqueued them."""
        entries: dict[str, list[dict]] = {}
        for service in self.services:
            lines = [line for line in service.log_path.read_text().splitlines() if line.strip()]
            expect(lines, f"{service.command.unit} wrote no log")
            for line in lines:
                if line.startswith(CELERY_PRINTS):
                    continue
                try:
                    entries.setdefault(service.command.unit, []).append(json.loads(line))
                except ValueError:
                    raise CheckFailed(f"{service.command.unit} wrote a line that is not JSON: {line[:300]}")
        worker = entries["registrar-worker@.service"]
        traced = [e for e in worker if e.get("task_id") and e.get("request_id")]
        expect(traced, "no worker log line carries both a task id and the originating request id")
        web_ids = {e["request_id"] for e in entries["registrar-web.service"] if e.get("request_id")}
        step(
            f"logs: {sum(map(len, entries.values()))} lines, all JSON; {len(traced)} worker lines carry a task id "
            f"and a request id ({len(web_ids)} request ids in the web log)"
        )

    def run(self) -> None:
        failed = True
        try:
            env = self.prepare()
            tokens = self.seed(env)
            self.start_services(env)
            self.run_checks(tokens)
            for service in reversed(self.services):
                service.stop()
            self.check_logs()
            failed = False
        finally:
            self.stop(failed)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text exposition -> {(name, sorted labels): value}."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
            values[(match.group(1), labels)] = float(match.group(3))
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        ProdCheck(keep=args.keep).run()
    except CheckFailed as exc:
        print(f"prod-check: FAILED: {exc}", file=sys.stderr)
        return 1
    step(f"PASSED in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
