"""Benchmark Registrar under faults: intake rate and people's page p95 under each fault, as ratios to the
no-fault run of the same invocation (issue 23).

Run from the repository root (PostgreSQL binaries, redis-server and Node.js installed; nothing else running is
used)::

    python bench/faults.py [--seconds 8] [--agents 4] [--people 2]

It starts what the fault suite starts (tests/faults/harness.py): a PostgreSQL of its own (initdb, a free port),
Registrar split as the recipes split it (agent API and human pages in separate gunicorn pools), a Celery worker,
a private Redis, and the test IdP behind a fault proxy. Then one steady load (``--agents`` threads registering,
``--people`` threads loading the approvals queue) runs through these phases, ``--seconds`` each:

* **baseline**: no fault;
* **idp_slow**: the IdP answers every call 2 s late (the server's inline budget is 500 ms);
* **idp_down**: the IdP's port refuses connections;
* **idp_5xx**: the IdP answers 500;
* **redis_kill**: Redis killed -9, restarted after half the phase;
* **worker_kill**: the Celery worker killed -9, started again after 2 s (``Restart=always``).

Each fault phase reports intake (201/202 per second) and the people's p95 as ratios to the baseline, and the
5xx count. Goals: slow IdP intake >= 0.5x and p95 <= 2x; Redis or worker loss intake >= 0.8x. Afterwards it waits
until every client an agent was told about is active at the IdP, and counts what the IdP holds (lost, duplicated).
Appends one line to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ is sys.path[0]: keep it off the import path so no script there can shadow a module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "One line per run, appended by the scripts in bench/. Ratios compare against a baseline measured in the\n"
    "same run; absolute times depend on the machine.\n\n"
)
GOALS = {"idp_slow": (0.5, 2.0), "redis_kill": (0.8, None), "worker_kill": (0.8, None)}  # intake >=, p95 <=


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--people", type=int, default=2)
    args = parser.parse_args()

    from tests.faults.harness import PostgresServer

    postgres = PostgresServer().init()
    postgres.start()
    server = None
    try:
        # The test settings in this process (factories, the ORM on the server's database); the server's own
        # processes run portal.settings (tests/races/harness.py).
        os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings_test"
        os.environ["REGISTRAR_TEST_DATABASE"] = "postgresql"
        os.environ["DATABASE_URL"] = postgres.admin_url
        import django

        django.setup()
        from tests.faults.harness import build_fault_server, using_server

        server = build_fault_server(postgres)
        with using_server(server.database_url):
            line = run(server, args)
    finally:
        if server is not None:
            server.stop()
        postgres.destroy()
    print(line)
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as results:
        results.write(f"- {line}\n")


def run(server, args) -> str:
    from tests.faults.harness import Load, settle_at_idp
    from tests.races.harness import Call, bearer
    from tests.races.support import World, body

    world = World(server)
    owner = world.owner()
    _, rat = world.token(owner, max_uses=10**9)
    approver = world.person(world.user("approver"))
    page = Call("GET", "/approvals/", cookies={"sessionid": approver.session_key})

    def register(name: str) -> Call:
        return Call("POST", "/oauth2/register", json=body(name), headers=bearer(rat))

    proxy = server.proxy
    seconds = args.seconds
    phases: dict[str, tuple[float, float]] = {}

    def phase(name: str, start_fault, end_fault, *, end_at: float | None = None) -> None:
        start = time.monotonic()
        start_fault()
        if end_at is not None:
            time.sleep(end_at)
            end_fault()
            time.sleep(seconds - end_at)
        else:
            time.sleep(seconds)
            end_fault()
        phases[name] = (start, time.monotonic())
        time.sleep(2.0)  # recovery, not measured

    def nothing() -> None:
        pass

    with Load(server, agent_call=register, person_call=page, agents=args.agents, people=args.people) as load:
        load.wait_for(lambda o: o.kind == "agent" and o.status in (201, 202), after=0, timeout=60)
        load.wait_for(lambda o: o.kind == "person", after=0, timeout=60)
        time.sleep(2.0)
        phase("baseline", nothing, nothing)
        phase("idp_slow", lambda: proxy.set("slow", delay=2.0), lambda: proxy.set("pass"))
        phase("idp_down", lambda: proxy.set("down"), lambda: proxy.set("pass"))
        phase("idp_5xx", lambda: proxy.set("error", status=500), lambda: proxy.set("pass"))
        phase("redis_kill", server.redis.kill9, server.redis.start, end_at=seconds / 2)
        phase("worker_kill", server.celery.kill9, server.start_worker, end_at=2.0)
    missing, at_idp = settle_at_idp(server, load, timeout=120)
    duplicated = sum(n - 1 for n in at_idp.values() if n > 1)

    base_start, base_end = phases["baseline"]
    base_rate = load.intake_rate(base_start, base_end)
    base_p95 = load.person_p95(base_start, base_end)
    parts = [f"baseline intake {base_rate:.1f}/s, people p95 {base_p95 * 1000:.0f} ms"]
    verdicts = []
    for name, (start, end) in phases.items():
        if name == "baseline":
            continue
        rate, p95 = load.intake_rate(start, end), load.person_p95(start, end)
        errors = sum(1 for o in load.outcomes if start <= o.at < end and (o.status >= 500 or o.status == 0))
        rate_ratio, p95_ratio = rate / base_rate, p95 / base_p95
        parts.append(
            f"{name} intake {rate_ratio:.2f}x ({rate:.1f}/s) p95 {p95_ratio:.2f}x ({p95 * 1000:.0f} ms) 5xx {errors}"
        )
        if name in GOALS:
            low, high = GOALS[name]
            met = rate_ratio >= low and (high is None or p95_ratio <= high)
            verdicts.append(f"{name} {'MET' if met else 'NOT MET'}")
    told = load.told()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{when} faults ({args.agents} agents + {args.people} people, {seconds:.0f} s a phase, API pool 3 + pages "
        f"pool 2 gunicorn workers, inline budget 500 ms, {os.cpu_count()} cores): "
        + "; ".join(parts)
        + f"; after recovery {len(told)} told, {len(missing)} not active, {duplicated} duplicated at the IdP; goals "
        + ", ".join(verdicts)
        + f"; Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
