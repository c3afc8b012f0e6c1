"""Benchmark provisioning: approved clients delivered to the real IdP by Celery workers.

Run from the repository root (PostgreSQL and Redis on localhost, Node.js for the IdP)::

    python bench/provision.py [--clients 1000] [--workers 2] [--concurrency 1] [--idp-latency-ms 0]

Measures, in the same run and against the same real IdP (tests/idp/server.mjs, started fresh):

* **baseline**: the IdP's own registration rate — a plain sequential HTTP loop (httpx, the connectors'
  client) POSTing the same RFC 7591 metadata to its registration endpoint over one keep-alive connection,
  run before and after the workers (each after 100 unmeasured requests) and averaged;
* **workers**: ``--clients`` approved clients (rows + outbox CREATE entries written beforehand) delivered
  by ``--workers`` real ``celery -A portal worker`` processes over Redis (warmed up first on 100 other
  clients), from the moment one ``requeue_outbox`` task is sent until no entry is pending (each delivery: lease, connector call, store
  the encrypted registration token, activate the client, audit).

Prints clients/s for both and their ratio (goal >= 0.7) and appends a line to bench/RESULTS.md.
``--idp-latency-ms N`` puts a delaying proxy between everyone and the IdP (a real IdP is a network hop away):
there the workers' in-flight calls (``REGISTRAR_OUTBOX_PARALLEL_CALLS``) decide the rate.
Uses its own database (``REGISTRAR_BENCH_DATABASE_URL``, default ``registrar_bench_provision``; dropped and
recreated) and Redis db 10.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ is sys.path[0]: keep it off the import path so no script there can shadow a module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

BENCH_DB = os.environ.get(
    "REGISTRAR_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/registrar_bench_provision"
)
REDIS_URL = os.environ.get("REGISTRAR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "One line per run, appended by the scripts in bench/. Ratios compare against a baseline measured in the\n"
    "same run; absolute times depend on the machine.\n\n"
)
GOAL = 0.7
WARMUP_CLIENTS = 100  # per side: unmeasured requests before the baseline loop, and clients before the workers'


def recreate_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django() -> None:
    os.environ["DATABASE_URL"] = BENCH_DB
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("REGISTRAR_EMBEDDED", "1")  # demo-grade keys; the database and Redis are real
    os.environ["REGISTRAR_DEMO_MODE"] = "false"
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class LatencyProxy:
    """A loopback TCP proxy that delivers every byte from the client to the IdP ``latency_ms`` after it
    arrived (answers come straight back): the IdP as if it were a network hop away, for ``--idp-latency-ms``.
    Order and pipelining are kept: each chunk is forwarded at its own arrival time + latency."""

    def __init__(self, target_port: int, latency_ms: float) -> None:
        self.target_port = target_port
        self.delay = latency_ms / 1000
        self.port = 0

    def start(self) -> LatencyProxy:
        import asyncio
        import threading

        ready = threading.Event()

        async def pump_delayed(reader, writer) -> None:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()

            async def forward() -> None:
                while (item := await queue.get()) is not None:
                    due, data = item
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    writer.write(data)
                    await writer.drain()
                writer.close()

            forwarder = asyncio.create_task(forward())
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait(None)
            await forwarder

        async def pump(reader, writer) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        async def handle(client_reader, client_writer) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                pump_delayed(client_reader, server_writer), pump(server_reader, client_writer), return_exceptions=True
            )

        async def serve() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="latency-proxy").start()
        ready.wait(10)
        return self

    def url(self, url: str) -> str:
        """``url`` of the IdP, routed through the proxy."""
        return url.replace(f":{self.target_port}/", f":{self.port}/", 1)


def baseline(endpoint: str, token: str, agent, count: int, warmup: int = WARMUP_CLIENTS) -> float:
    import httpx

    body = {
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": agent.jwks,
        "scope": "tickets:read",
    }
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10) as http:
        for n in range(warmup):  # unmeasured: connection, V8's JIT, the client's first-call costs
            http.post(endpoint, json={**body, "client_name": f"warmup-{n}"}, headers=headers)
        started = time.perf_counter()
        for n in range(count):
            response = http.post(endpoint, json={**body, "client_name": f"baseline-{n}"}, headers=headers)
            response.raise_for_status()
        elapsed = time.perf_counter() - started
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument(
        "--idp-latency-ms",
        type=float,
        default=0.0,
        help="put the IdP this far away (a delaying proxy) for the baseline and the workers alike",
    )
    args = parser.parse_args()

    recreate_database(BENCH_DB)
    setup_django()

    from datetime import timedelta

    import redis
    from celery import Celery
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from inventory.choices import ClientState, OutboxStatus
    from inventory.models import Client, OutboxEntry
    from inventory.services import client_create
    from portal.audit import Actor
    from portal.models import User
    from portal.tlog.keys import log_signer
    from tests.agents import Agent
    from tests.idp_server import IdPProcess
    from tests.provisioning import connection_for
    from tests.workers import CeleryWorker, worker_env

    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    agent = Agent()
    workers: list[CeleryWorker] = []
    with IdPProcess() as idp_process:
        endpoint = idp_process.registration_endpoint
        idp = connection_for(idp_process, name="bench-idp")
        if args.idp_latency_ms:
            proxy = LatencyProxy(urlparse(endpoint).port, args.idp_latency_ms).start()
            endpoint = proxy.url(endpoint)
            idp.config = {**idp.config, "registration_endpoint": endpoint}
            idp.save(update_fields=["config"])
        owner = User.objects.create(username="bench-owner")
        later = timezone.now() + timedelta(days=1)
        # Write the approved clients with their outbox entries, not yet due, without nudging workers; the
        # first WARMUP_CLIENTS only warm the workers up (imports, connections, connector), like the baseline's
        # unmeasured first requests warm the IdP and its HTTP client.
        with transaction.atomic():
            for n in range(WARMUP_CLIENTS + args.clients):
                client_create(
                    actor=Actor.system("bench"),
                    idp=idp,
                    name=f"bench-{n}",
                    owner=owner,
                    purpose="bench",
                    scopes=["tickets:read"],
                    expires_at=later,
                    internal_only=True,
                    jwks=agent.jwks,
                )
            OutboxEntry.objects.update(next_attempt_at=later)
        broker.flushdb()  # drop the nudges: the timed run starts from one requeue
        warmup_ids = list(OutboxEntry.objects.order_by("id").values_list("id", flat=True)[:WARMUP_CLIENTS])

        base_before = baseline(endpoint, idp_process.initial_access_token, agent, args.clients)

        # Production settings in the workers (DEBUG off: no per-query recording; REGISTRAR_OUTBOX_PARALLEL_CALLS
        # as configured, default 4); the demo-only dev key is fine.
        env = worker_env(
            database=BENCH_DB,
            redis_url=REDIS_URL,
            encryption_key=settings.REGISTRAR_ENCRYPTION_KEYS[0],
            DEBUG="false",
            SECRET_KEY="bench-provision-" + "k" * 40,
            ALLOWED_HOSTS="127.0.0.1",
            REGISTRAR_LOG_SIGNING_KEY=log_signer().encoded,
        )
        try:
            for n in range(args.workers):
                # production log level (INFO): one connector line and one delivery line per client
                workers.append(CeleryWorker(f"bench-{n}", env=env, concurrency=args.concurrency).start())
            sender = Celery("bench-sender", broker=REDIS_URL)
            OutboxEntry.objects.filter(id__in=warmup_ids).update(next_attempt_at=timezone.now())
            sender.send_task("inventory.tasks.requeue_outbox")
            while OutboxEntry.objects.filter(id__in=warmup_ids, status=OutboxStatus.PENDING).exists():
                time.sleep(0.02)
            started = time.perf_counter()
            OutboxEntry.objects.filter(status=OutboxStatus.PENDING).update(next_attempt_at=timezone.now())
            sender.send_task("inventory.tasks.requeue_outbox")
            while OutboxEntry.objects.filter(status=OutboxStatus.PENDING).exists():
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            for worker in workers:
                worker.stop()
            broker.flushdb()

        # The baseline again after the workers, against the same IdP (now holding both runs' clients): the
        # mean of the two is less at the mercy of a noisy moment than either alone.
        base_after = baseline(endpoint, idp_process.initial_access_token, agent, args.clients)
        base_rate = (base_before + base_after) / 2
        active = Client.objects.filter(state=ClientState.ACTIVE, idp_client_id__isnull=False).count() - WARMUP_CLIENTS
        dead = OutboxEntry.objects.filter(status=OutboxStatus.DEAD).count()

    rate = args.clients / elapsed
    ratio = rate / base_rate
    verdict = "OK" if ratio >= GOAL else "below goal"
    parallel = os.environ.get("REGISTRAR_OUTBOX_PARALLEL_CALLS", "4")
    latency = f", IdP {args.idp_latency_ms:g} ms away, {parallel} calls in flight" if args.idp_latency_ms else ""
    line = (
        f"- {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC provision: {args.clients} clients by "
        f"{args.workers} worker(s) x{args.concurrency}{latency} in {elapsed:.2f} s = {rate:.0f} clients/s; IdP sequential "
        f"registration loop {base_rate:.0f} clients/s (before {base_before:.0f}, after {base_after:.0f}); ratio {ratio:.2f} (goal >= {GOAL}) {verdict}; "
        f"{active} active, {dead} dead; Python {platform.python_version()}\n"
    )
    print(line.strip())
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as results:
        results.write(line)
    if active != args.clients or dead:
        sys.exit("not every client was delivered")


if __name__ == "__main__":
    main()
