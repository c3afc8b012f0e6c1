"""Audit log benchmarks, each against a baseline measured in the same run (PostgreSQL on localhost).

    .venv/bin/python bench/audit_log.py [--parts append,seal,proof,verify] [--connections 8] [--duration 10]
                                        [--events 10000000] [--backlog 100000] [--rebuild]

Parts:

- ``append`` — raw write ceiling of the intake's statement (token use + request INSERT + audit event INSERT,
  bench/intake.py's ``RAW_STATEMENT``) against the head-locked statement it replaced (``OLD_STATEMENT``: the
  chain head upserted under its row lock, the event hashed by PostgreSQL), ``--connections`` client processes
  for ``--duration`` seconds each, alternated twice. Goal: new ≥ 2× old. ``--tokens own`` (default): each
  connection registers with a token of its own, as independent agents do; ``--tokens shared``: one token for all
  (runs before 2026-12-04 12:30 UTC did this: the token's row lock then serialises both statements).
- ``seal`` — the sequencer while bench/intake.py's load runs at full speed: a backlog of ``--backlog`` waiting
  events is loaded first, then gunicorn + wrk POST registrations (the 202 path) for ``--seal-duration`` seconds
  while a sequencer process runs ``log_seal`` in a loop (idle wait 0.25 s, the nudge cadence). Reports the
  backlog's drain rate (events sealed per second while intake runs; goal ≥ 5,000/s), the sequencer's capacity
  (events per second of its runs that sealed 1,000 or more), and, once the backlog is gone, the seal lag of every event the load
  writes (checkpoint time − event time; goal p99 ≤ 2 s), with the registrations/s reached.
- ``proof`` — inclusion proofs at ``--events`` (10,000,000) events: a dedicated database (``reg_auditlog_bench10m``)
  is filled once synthetically — events COPYed with their log indexes, tiles built in Python from the same entry
  bytes and COPYed, one checkpoint signed per million — then 1,000 random events are proven (one tile query +
  RFC 9162 verification each). Goal p95 ≤ 5 ms. ``--rebuild`` rebuilds it.
- ``verify`` — ``verify_log`` over that database against a plain ``sha256`` loop over the same entry bytes
  (regenerated in the same run; only the loop is timed). Goal: verify events/s ≥ 0.3 × the loop's.

Appends one line to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("BENCH_DATABASE_NAME", "reg_auditlog_bench_audit")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
from bench import intake  # noqa: E402  (reads BENCH_DATABASE_NAME)

BIG_DB = os.environ.get("BENCH_BIG_DATABASE_NAME", "reg_auditlog_bench10m")
BIG_URL = intake.ADMIN_URL.rsplit("/", 1)[0] + "/" + BIG_DB
STATS_FILE = Path(tempfile.gettempdir()) / f"{BIG_DB}.json"  # how long the build took

# The intake's write as it was before the log: the chain head upserted (its row lock held to commit) and the
# event hashed by PostgreSQL with the previous hash spliced in (portal.audit.chained_insert, at c2fc54b).
OLD_STATEMENT = f"""
WITH tok AS (UPDATE approvals_initialaccesstoken SET uses = uses + 1, last_used_at = now()
             WHERE id = %s AND uses < max_uses AND revoked_at IS NULL AND expires_at > now() RETURNING id),
 req AS (INSERT INTO approvals_registrationrequest ({intake.RAW_COLUMNS})
         SELECT %s, 'registration', 'pending', 'token', %s::jsonb, 'bench-agent', '', 'benchmark', '["tickets:write"]',
                3600, '["tickets:write"]', 3600, '[]', true, %s, %s, tok.id, '', %s, 1, 'medium', 'review',
                '[{{"code": "medium_sensitivity_scope"}}]', %s::jsonb, 1, '', '127.0.0.1', now(), '' FROM tok
         RETURNING id),
 head AS (INSERT INTO portal_audithead AS h (id, last_event_id, prev_hash, last_hash)
          SELECT 1, 1, repeat('0', 64), encode(sha256(%s::bytea), 'hex') WHERE EXISTS (SELECT 1 FROM req)
          ON CONFLICT (id) DO UPDATE SET last_event_id = h.last_event_id + 1, prev_hash = h.last_hash,
             last_hash = encode(sha256(%s::bytea || convert_to((h.last_event_id + 1)::text, 'UTF8')
                                       || convert_to(h.last_hash, 'UTF8')), 'hex')
          RETURNING last_event_id, prev_hash, last_hash)
INSERT INTO portal_auditevent (id, occurred_at, actor_type, actor_id, actor_label, action, object_type, object_id,
                               after, reason, policy_version, request_id, prev_hash, hash)
SELECT 1000000000 + head.last_event_id, now(), 'agent', %s, 'token rat_bench_x', 'registration.pending',
       'registration_request', %s, %s::jsonb, '', 1, '', head.prev_hash, head.last_hash FROM head
RETURNING id"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- append ---------------------------------------------------------------------------------------------


def own_token(conn) -> int:
    """A token of this connection's own, cloned from the seeded one: independent agents hold different initial
    access tokens, and each statement locks its token's row until commit (``uses = uses + 1``)."""
    return conn.execute(
        "INSERT INTO approvals_initialaccesstoken (purpose, prefix, token_hash, allowed_scopes, max_ttl_seconds,"
        " max_uses, uses, internal_only, expires_at, created_at, idp_id, owner_id, team_id)"
        " SELECT purpose, prefix, md5(random()::text) || md5(random()::text), allowed_scopes, max_ttl_seconds,"
        " max_uses, 0, internal_only, expires_at, now(), idp_id, owner_id, team_id"
        " FROM approvals_initialaccesstoken ORDER BY id LIMIT 1 RETURNING id"
    ).fetchone()[0]


def new_writer(conn, token_id: int):
    """bench/intake.py's raw_writer (the intake's statement: the event a plain INSERT) on token ``token_id``."""
    import uuid

    owner_id = conn.execute("SELECT owner_id FROM approvals_initialaccesstoken WHERE id = %s", [token_id]).fetchone()[0]
    idp_id = conn.execute("SELECT id FROM inventory_idpconnection").fetchone()[0]
    metadata = json.dumps(intake.BODY_202)
    verdict = json.dumps({"tier": "medium", "outcome": "review", "reasons": [{"code": "medium_sensitivity_scope"}]})

    def write() -> None:
        public_id = "reg_" + uuid.uuid4().hex[:20]
        params = (token_id, public_id, metadata, idp_id, owner_id, uuid.uuid4().hex + uuid.uuid4().hex, verdict)
        if conn.execute(intake.RAW_STATEMENT, (*params, str(token_id), public_id, verdict)).fetchone() is None:
            raise RuntimeError("new statement: the token ran out")

    return write


def old_writer(conn, token_id: int):
    import uuid

    owner_id = conn.execute("SELECT owner_id FROM approvals_initialaccesstoken WHERE id = %s", [token_id]).fetchone()[0]
    idp_id = conn.execute("SELECT id FROM inventory_idpconnection").fetchone()[0]
    metadata = json.dumps(intake.BODY_202)
    verdict = json.dumps({"tier": "medium", "outcome": "review", "reasons": [{"code": "medium_sensitivity_scope"}]})
    payload = json.dumps({"requester": "token rat_bench_x", "verdict": json.loads(verdict)}).encode()

    def write() -> None:
        public_id = "reg_" + uuid.uuid4().hex[:20]
        row = conn.execute(
            OLD_STATEMENT,
            (
                token_id,
                public_id,
                metadata,
                idp_id,
                owner_id,
                uuid.uuid4().hex + uuid.uuid4().hex,
                verdict,
                payload,
                payload,
                str(token_id),
                public_id,
                verdict,
            ),
        ).fetchone()
        if row is None:
            raise RuntimeError("old statement: the token ran out")

    return write


def _ceiling_worker(kind: str, tokens: str, duration: float, start_at: float, queue) -> None:
    import psycopg

    with psycopg.connect(intake.DB_URL, autocommit=True, prepare_threshold=0) as conn:
        if tokens == "own":
            token_id = own_token(conn)
        else:
            token_id = conn.execute("SELECT id FROM approvals_initialaccesstoken ORDER BY id LIMIT 1").fetchone()[0]
        write = (old_writer if kind == "old" else new_writer)(conn, token_id)
        while time.time() < start_at:
            time.sleep(0.01)
        stop, count = start_at + duration, 0
        while time.time() < stop:
            write()
            count += 1
    queue.put(count)


def ceiling(kind: str, *, duration: int, connections: int, tokens: str = "own") -> float:
    """Statements per second from ``connections`` client processes (not threads: one Python process's GIL
    would cap the clients before the database)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 2  # every client connected before the clock starts
    procs = [
        ctx.Process(target=_ceiling_worker, args=(kind, tokens, duration, start_at, queue)) for _ in range(connections)
    ]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / duration


def part_append(args) -> dict:
    print(f"append: preparing {intake.DB_NAME} ...", flush=True)
    intake.recreate_database()
    intake.seed()
    runs = {"new": [], "old": []}
    for _ in range(2):
        for name in ("old", "new"):
            rate = ceiling(name, duration=args.duration, connections=args.connections, tokens=args.tokens)
            runs[name].append(rate)
            print(f"append {name}: {rate:.0f} tx/s", flush=True)
    new, old = statistics.mean(runs["new"]), statistics.mean(runs["old"])
    return {"append_new": new, "append_old": old, "append_ratio": new / old}


# --- seal under intake load -----------------------------------------------------------------------------

SEQUENCER = r"""
import json, os, sys, time, django
django.setup()
from portal.tlog.sequencer import log_seal
stop = sys.argv[1]
busy = sealed = 0.0
batches = []
while not os.path.exists(stop):
    began = time.perf_counter()
    report = log_seal(time_budget=5)
    spent = time.perf_counter() - began
    if report.sealed:
        busy += spent
        sealed += report.sealed
        batches.append((report.sealed, spent))
    else:
        time.sleep(0.25)
# capacity: the rate of full runs (thousands of events), not of the trickle after the backlog, whose fixed cost
# per run (checking the last checkpoint, loading the right edge, signing) dominates a handful of events
big = [(n, s) for n, s in batches if n >= 1000]
print(json.dumps({"sealed": sealed, "busy": busy, "batches": len(batches),
                  "capacity": sum(n for n, _ in big) / sum(s for _, s in big) if big else 0.0}))
"""


def part_seal(args) -> dict:
    import psycopg

    print(f"seal: preparing {intake.DB_NAME} ...", flush=True)
    if "django" in sys.modules:  # the append part set Django up on the database recreated now
        from django.db import connections

        connections.close_all()
    intake.recreate_database()
    intake.seed()
    from portal.audit import Actor, audit_record_many

    backlog_began = time.monotonic()
    for offset in range(0, args.backlog, 20_000):
        audit_record_many(
            [
                {
                    "actor": Actor.system("bench"),
                    "action": "client.expired",
                    "object_type": "client",
                    "object_id": f"reg_backlog{offset + i:09d}",
                    "reason": "expired by sweep",
                    "after": {"state": "expired", "n": offset + i},
                }
                for i in range(min(20_000, args.backlog - offset))
            ]
        )
    print(f"seal: backlog of {args.backlog} events loaded in {time.monotonic() - backlog_began:.0f}s", flush=True)
    env = intake.server_env()
    port = intake.free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="bench-audit-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    gunicorn = subprocess.Popen(
        [
            str(intake.VENV_BIN / "gunicorn"),
            "portal.wsgi:application",
            "-w",
            str(args.workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stderr=log,
    )
    stop_file = Path(tempfile.mkdtemp()) / "stop"
    sequencer = None
    samples: list[tuple[float, int]] = []
    try:
        intake.wait_http(f"http://127.0.0.1:{port}/healthz")
        with psycopg.connect(intake.DB_URL, autocommit=True) as conn:
            load_start = conn.execute("SELECT now()").fetchone()[0]
        sequencer = subprocess.Popen(
            [sys.executable, "-c", SEQUENCER, str(stop_file)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        drained_at = None
        began = time.monotonic()
        done = threading.Event()

        def sample() -> None:
            nonlocal drained_at
            with psycopg.connect(intake.DB_URL, autocommit=True) as conn:
                while not done.is_set():
                    waiting = conn.execute(
                        "SELECT count(*) FROM portal_auditevent WHERE log_index IS NULL "
                        "AND object_id LIKE 'reg_backlog%%'"
                    ).fetchone()[0]
                    samples.append((time.monotonic() - began, waiting))
                    if waiting == 0 and drained_at is None:
                        drained_at = time.monotonic() - began
                    time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        url = f"http://127.0.0.1:{port}/oauth2/register"
        load = intake.run_wrk(
            url, intake.BODY_202, bearer=intake.TOKEN, duration=args.seal_duration, connections=args.connections
        )
        time.sleep(3)  # the last events of the load get sealed
        done.set()
        sampler.join()
    finally:
        stop_file.touch()
        summary = json.loads(sequencer.communicate(timeout=120)[0].strip().splitlines()[-1]) if sequencer else {}
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
    if drained_at is None:
        raise RuntimeError(f"the backlog was not drained during {args.seal_duration}s of load: raise --seal-duration")
    with psycopg.connect(intake.DB_URL, autocommit=True) as conn:
        unsealed = conn.execute("SELECT count(*) FROM portal_auditevent WHERE log_index IS NULL").fetchone()[0]
        if unsealed:
            raise RuntimeError(f"{unsealed} events were never sealed")
        # steady state: every event the load wrote once the backlog was gone, from its occurrence to the first
        # checkpoint that covers it
        steady = load_start + timedelta(seconds=drained_at + 1)
        lags = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM (SELECT min(c.created_at) FROM portal_logcheckpoint c "
                "WHERE c.tree_size > e.log_index) - e.occurred_at) FROM portal_auditevent e "
                "WHERE e.occurred_at >= %s AND e.object_id NOT LIKE 'reg_backlog%%'",
                [steady],
            ).fetchall()
        ]
    if not lags:
        raise RuntimeError("no steady-state events after the backlog drained: raise --seal-duration")
    lags = [float(lag) for lag in lags]
    drain_events = args.backlog
    drain_rate = args.backlog / drained_at
    return {
        "seal_drain_rate": drain_rate,
        "seal_drained_s": drained_at or float("nan"),
        "seal_capacity": summary.get("capacity", 0.0),
        "seal_total": summary.get("sealed", 0),
        "seal_lag_p50": percentile(lags, 0.50),
        "seal_lag_p99": percentile(lags, 0.99),
        "seal_load_rps": load["rps"],
        "seal_load_events": len(lags),
        "seal_drain_events": drain_events,
    }


# --- the 10-million-event log ---------------------------------------------------------------------------


def big_env() -> dict[str, str]:
    return {**intake.server_env(), "DATABASE_URL": BIG_URL}


def build_big(args) -> None:
    """Fill BIG_DB synthetically: events with their log indexes (COPY), tiles, checkpoints; records the sha256
    loop over the same entry bytes in STATS_FILE."""
    import psycopg

    with psycopg.connect(intake.ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BIG_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BIG_DB}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=big_env(), check=True)
    subprocess.run([sys.executable, __file__, "--_build", str(args.events)], cwd=ROOT, env=big_env(), check=True)


def synthetic_chunks(n: int, chunk: int = 100_000):
    """The synthetic events, deterministic: chunks of (COPY rows, their log entries)."""
    from portal.audit import entry_bytes

    rng = random.Random(10_000_000)
    actions = [
        "registration.pending",
        "registration.accepted",
        "client.activate",
        "client.expired",
        "request.approve",
        "client.renew",
        "registration.refused",
    ]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, n, chunk):
        rows, entries = [], []
        for i in range(start, min(n, start + chunk)):
            occurred = (base + timedelta(microseconds=i * 3_000_017)).isoformat(timespec="microseconds")
            action = actions[i % len(actions)]
            after = {
                "state": "pending" if i % 3 else "active",
                "scopes": ["tickets:write", "docs:read"][: 1 + i % 2],
                "verdict": {"tier": "medium", "outcome": "review"},
                "n": i,
            }
            label = f"token rat_{rng.randrange(10**6):06d}"
            object_id = f"reg_{i:020d}"
            entries.append(
                entry_bytes(
                    i + 1,
                    occurred,
                    "agent",
                    "",
                    label,
                    action,
                    "registration_request",
                    object_id,
                    None,
                    after,
                    "",
                    1,
                    "req-bench",
                    None,
                )
            )
            rows.append(
                (
                    i + 1,
                    occurred,
                    "agent",
                    "",
                    label,
                    action,
                    "registration_request",
                    object_id,
                    None,
                    json.dumps(after),
                    "",
                    1,
                    "req-bench",
                    "",
                    None,
                    i,
                )
            )
        yield start, rows, entries


def sha256_loop_seconds(n: int) -> float:
    """The baseline: a plain sha256 loop over the same entry bytes (only the loop is timed)."""
    import hashlib

    seconds = 0.0
    for _, _, entries in synthetic_chunks(n):
        began = time.perf_counter()
        for entry in entries:
            hashlib.sha256(entry).digest()
        seconds += time.perf_counter() - began
    return seconds


def _build(n: int) -> None:

    import django

    django.setup()
    from django.db import connection

    from portal.models import LogCheckpoint
    from portal.tlog import merkle
    from portal.tlog.keys import log_signer
    from portal.tlog.note import Checkpoint, sign_note
    from portal.tlog.sequencer import append_leaves
    from portal.tlog.tiles import TileSet

    began = time.monotonic()
    tiles = TileSet()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef, indexname FROM pg_indexes WHERE tablename = 'portal_auditevent' "
            "AND indexname <> 'portal_auditevent_pkey'"
        )
        indexes = cursor.fetchall()
        for _, name in indexes:  # built once after the load
            cursor.execute(f'ALTER TABLE portal_auditevent DROP CONSTRAINT IF EXISTS "{name}"')
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        columns = (
            "id, occurred_at, actor_type, actor_id, actor_label, action, object_type, object_id, before, after,"
            " reason, policy_version, request_id, prev_hash, hash, log_index"
        )
        for start, rows, entries in synthetic_chunks(n):
            append_leaves(tiles, start, [merkle.leaf_hash(e) for e in entries])
            with cursor.cursor.copy(f"COPY portal_auditevent ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            print(f"  {start + len(rows):,} events ({time.monotonic() - began:.0f}s)", flush=True)
        with cursor.cursor.copy("COPY portal_logtile (level, tile_index, hashes) FROM STDIN") as copy:
            for (level, index), hashes in tiles.tiles.items():
                copy.write_row((level, index, bytes(hashes)))
        print(f"  indexes ({time.monotonic() - began:.0f}s)", flush=True)
        for definition, _ in indexes:
            cursor.execute(definition)
        for name in ("audit_hash_unique", "audit_log_index_unique"):  # constraints, not just indexes
            cursor.execute(f'ALTER TABLE portal_auditevent ADD CONSTRAINT "{name}" UNIQUE USING INDEX "{name}"')
        cursor.execute("SELECT setval(pg_get_serial_sequence('portal_auditevent', 'id'), %s)", [n])
        cursor.execute("VACUUM ANALYZE portal_auditevent")
    signer = log_signer()
    for size in list(range(1_000_000, n, 1_000_000)) + [n]:
        root = merkle.root(size, tiles.node)
        LogCheckpoint.objects.create(
            tree_size=size,
            root_hash=root.hex(),
            created_at=datetime.now(UTC),
            note=sign_note(Checkpoint(signer.name, size, root).text, [signer]),
        )
    STATS_FILE.write_text(json.dumps({"events": n, "build_seconds": time.monotonic() - began}))
    print(f"built {n:,} events in {time.monotonic() - began:.0f}s", flush=True)


def _measure_big(parts: list[str]) -> None:
    import django

    django.setup()
    from portal.audit import leaf_data
    from portal.models import AuditEvent, LogCheckpoint
    from portal.tlog import merkle
    from portal.tlog.tiles import proofs
    from portal.tlog.verify import verify_log

    out = {}
    checkpoint = LogCheckpoint.objects.order_by("-tree_size").first()
    size, root = checkpoint.tree_size, bytes.fromhex(checkpoint.root_hash)
    if "proof" in parts:
        rng = random.Random(5)
        picks = [rng.randrange(size) for _ in range(1_000)]
        leaves = {e.log_index: merkle.leaf_hash(leaf_data(e)) for e in AuditEvent.objects.filter(log_index__in=picks)}
        timings = []
        for index in picks:
            began = time.perf_counter()
            paths, _ = proofs([index], size)
            merkle.verify_inclusion(index, size, leaves[index], paths[index], root)
            timings.append((time.perf_counter() - began) * 1000)
        out |= {"proof_p50_ms": percentile(timings, 0.5), "proof_p95_ms": percentile(timings, 0.95), "proof_size": size}
    if "verify" in parts:
        began = time.perf_counter()
        report = verify_log(witness_paths=[])
        seconds = time.perf_counter() - began
        if report.problem is not None or report.events_verified != size:
            raise RuntimeError(f"verify_log: {report.problem} ({report.events_verified} events)")
        out |= {
            "verify_seconds": seconds,
            "verify_events": report.events_verified,
            "sha256_seconds": sha256_loop_seconds(size),
        }
    print("RESULT " + json.dumps(out), flush=True)


def part_big(args, parts: list[str]) -> dict:
    import psycopg

    exists = False
    try:
        with psycopg.connect(BIG_URL) as conn:
            exists = conn.execute("SELECT max(tree_size) FROM portal_logcheckpoint").fetchone()[0] == args.events
    except psycopg.Error:
        pass
    if args.rebuild or not exists or not STATS_FILE.exists():
        print(f"building {BIG_DB} with {args.events:,} events ...", flush=True)
        build_big(args)
    stats = json.loads(STATS_FILE.read_text())
    run = subprocess.run(
        [sys.executable, __file__, "--_measure", ",".join(parts)],
        cwd=ROOT,
        env=big_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    if "verify_seconds" in result:
        result["sha256_rate"] = result["verify_events"] / result["sha256_seconds"]
        result["verify_rate"] = result["verify_events"] / result["verify_seconds"]
        result["verify_ratio"] = result["verify_rate"] / result["sha256_rate"]
    result["build_seconds"] = stats["build_seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="append,seal,proof,verify")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--tokens",
        choices=("own", "shared"),
        default="own",
        help="append part: each connection registers with a token of its own (independent agents), or all share "
        "one (its row lock then serialises both statements, whatever the audit does)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per append run")
    parser.add_argument("--seal-duration", type=int, default=40, help="seconds of intake load in the seal part")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers in the seal part")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--_build", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._build:
        _build(args._build)
        return 0
    if args._measure:
        _measure_big(args._measure.split(","))
        return 0
    parts = args.parts.split(",")
    if "seal" in parts and not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    r: dict = {}
    if "append" in parts:
        r |= part_append(args)
    if "seal" in parts:
        r |= part_seal(args)
    big = [p for p in parts if p in ("proof", "verify")]
    if big:
        r |= part_big(args, big)
    pieces = []
    if "append_ratio" in r:
        pieces.append(
            f"append ceiling ({args.connections} conns, {'a token each' if args.tokens == 'own' else 'one shared token'}) new {r['append_new']:.0f} tx/s vs head-locked "
            f"{r['append_old']:.0f} tx/s → ratio {r['append_ratio']:.2f} (goal ≥ 2)"
        )
    if "seal_lag_p99" in r:
        pieces.append(
            f"sequencer under intake load ({r['seal_load_rps']:.0f} registrations/s): backlog of "
            f"{args.backlog:,} drained at {r['seal_drain_rate']:,.0f} events/s (goal ≥ 5,000), capacity "
            f"{r['seal_capacity']:,.0f} events/s while running; seal lag of the load's {r['seal_load_events']:,} "
            f"events p50 {r['seal_lag_p50']:.2f} s, p99 {r['seal_lag_p99']:.2f} s (goal ≤ 2 s)"
        )
    if "proof_p95_ms" in r:
        pieces.append(
            f"inclusion proof at {r['proof_size']:,} events p50 {r['proof_p50_ms']:.2f} ms, "
            f"p95 {r['proof_p95_ms']:.2f} ms (goal ≤ 5 ms)"
        )
    if "verify_ratio" in r:
        pieces.append(
            f"verify_audit over {r['verify_events']:,} events {r['verify_seconds']:.0f} s = "
            f"{r['verify_rate']:,.0f} events/s vs sha256 loop {r['sha256_rate']:,.0f} events/s → ratio "
            f"{r['verify_ratio']:.3f} (goal ≥ 0.3)"
        )
    load = os.getloadavg()[0]  # other work on the machine skews every figure: say how busy it was
    line = (
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC audit_log ({os.cpu_count()} cores, load {load:.1f} at the end, "
        f"PostgreSQL): " + "; ".join(pieces)
    )
    print(json.dumps(r, default=str))
    intake.append_result(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
