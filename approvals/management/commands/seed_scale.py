"""Load a realistic large inventory into PostgreSQL: ``manage.py seed_scale --clients 1000000``.

Owners (some of them leavers), teams, IdPs, a scope catalogue, clients in every state and tier with
lineage (spawned children up to depth 3), registration requests with human decisions for the last 90 days,
and one ``client.create`` audit event per client. The clients and their audit events are generated inside the
database (``INSERT … SELECT``); the requests and decisions, which need per-row choices, go through COPY. The
events take the log indexes the sequencer would give them and are sealed in place (``log_seal_preindexed``),
so ``verify_audit`` passes afterwards.

Two phases. The *load* (people, catalogue, clients, requests, audit events, with the bulk tables' secondary indexes
dropped) runs in one transaction: interrupted or failed there, it leaves nothing behind (the indexes come back with
the rollback). It commits with a note of what is left to do, the table ``seed_scale_pending`` (the statements that
recreate the dropped indexes). The *finish* then rebuilds those indexes, recounts the counts, VACUUMs and seals the
audit log on ``--jobs`` connections at once (default 2: on PostgreSQL 15 a GIN build, the counts' GROUP BYs and the
seal each keep one core busy, and other connections can only see the load once it is committed). Interrupted or
failed there, the rows stay: the command says so, the note stays, a new seed refuses to start, and
``seed_scale --finish`` completes it — every step is idempotent (``CREATE INDEX IF NOT EXISTS``, and a plain CREATE
INDEX is built whole or not at all; the counts are rebuilt from scratch; the seal continues from the last
checkpoint). Until then the database holds the rows without those indexes and with stale counts: a seed database,
not one anybody serves from.

It lives in approvals, the highest layer, because it writes every app's tables (inventory's clients,
approvals' requests and decisions, portal's audit events). It is longer than ~400 lines because it is one
pipeline read top to bottom (people, catalogue, clients, requests, audit), each step feeding the next;
splitting it would scatter the row layouts each step depends on (clients, requests, decisions, audit events,
counts must agree column for column with their tables).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from approvals import approval_flags
from approvals.models import RegistrationRequest
from inventory.catalogue import DEMO_SCOPES
from inventory.choices import IdPKind, RiskTier
from inventory.counts import counts_rebuild
from inventory.models import Client, IdPConnection, ScopeDefinition, Team
from portal.tlog.locks import SEQUENCER_LOCK, try_lock
from portal.tlog.sequencer import latest_checkpoint, log_seal, log_seal_preindexed

TTL_BY_TIER = {RiskTier.LOW: 24 * 3600, RiskTier.MEDIUM: 7 * 24 * 3600, RiskTier.HIGH: 24 * 3600}
REQUEST_DAYS = 90  # registration requests (and their decisions) are generated for the clients of the last 90 days
VERBS = [
    "invoice",
    "ticket",
    "calendar",
    "release",
    "incident",
    "billing",
    "payroll",
    "support",
    "search",
    "deploy",
    "backup",
    "metrics",
    "compliance",
    "onboarding",
    "contract",
    "pricing",
    "inventory",
    "forecast",
    "triage",
    "security",
    "marketing",
    "recruiting",
    "expense",
    "vendor",
    "catalog",
    "report",
    "translation",
    "audit",
]
NOUNS = [
    "summarizer",
    "router",
    "assistant",
    "reviewer",
    "scheduler",
    "classifier",
    "reconciler",
    "notifier",
    "planner",
    "agent",
    "bot",
    "copilot",
    "checker",
    "indexer",
    "harvester",
    "writer",
    "analyst",
    "monitor",
]


# One INSERT … SELECT over generate_series: every column derived from a few random() draws per row.
# Distributions: states 55/4/1 live (active/suspended/provisioning), 16/14/5/5 ended; tiers 60/30/10;
# 2 % leaver owners (their clients are orphaned); 0.5 % shadow; 3 % key-less; 1 % over the TTL ceiling.
_GENERATE_CLIENTS_SQL = """
INSERT INTO inventory_client (
    id, registration_id, idp_id, idp_client_id, idp_state, name, software_id, software_version, spiffe_id,
    owner_id, team_id, purpose, scopes, audiences, internal_only, metadata, auth_method, jwks, jwks_uri,
    parent_id, depth, risk_tier, state, created_via, policy_version, managed, created_at, activated_at,
    state_changed_at, expires_at, ended_at, idp_disabled_at, expiry_overshoot_seconds, last_used_at,
    last_synced_at, sync_failed, drift, discovered_at, orphaned_at, stale_at, renewals)
SELECT
    %(base)s + 1 + i, 'reg_s' || %(run)s || lpad(i::text, 8, '0'),
    (%(idps)s::int[])[1 + i %% cardinality(%(idps)s::int[])],
    'cid-' || %(run)s || '-' || to_hex(i), %(idp_state)s,
    verb || '-' || noun || '-' || i, 'com.example.' || verb, '1.0',
    CASE WHEN via = 'software_statement' THEN 'spiffe://prod.example/ns/' || verb || '/sa/' || noun || '-' || i
         ELSE '' END,
    owner_id,
    CASE WHEN r_team < 0.1 THEN NULL
         ELSE (%(teams)s::int[])[1 + owner_id %% cardinality(%(teams)s::int[])] END,
    CASE (i %% 6)
        WHEN 0 THEN 'Summarises ' || verb || ' documents for the finance team'
        WHEN 1 THEN 'Routes incoming ' || verb || ' requests to the right queue'
        WHEN 2 THEN 'Reads ' || verb || ' data nightly and posts a digest to the team channel'
        WHEN 3 THEN 'Drafts replies for ' || verb || ' tickets; a human sends them'
        WHEN 4 THEN 'Reconciles ' || verb || ' records between the CRM and the ledger'
        ELSE 'Monitors ' || verb || ' dashboards and opens incidents' END,
    (CASE tier
        WHEN 'low' THEN (ARRAY['["tickets:read"]', '["docs:read", "metrics:read"]', '["calendar:read"]',
                               '["docs:read"]'])[1 + i %% 4]
        WHEN 'medium' THEN (ARRAY['["tickets:write"]', '["crm:read", "docs:read"]',
                                  '["tickets:read", "tickets:write"]'])[1 + i %% 3]
        ELSE (ARRAY['["repo:write"]', '["db:prod:read"]', '["repo:write", "tickets:read"]'])[1 + i %% 3] END)::jsonb,
    jsonb_build_array('https://' || verb || '.internal'), r_team > 0.3, '{}'::jsonb,
    CASE WHEN r_auth < 0.95 THEN 'private_key_jwt' WHEN r_auth < 0.98 THEN 'client_secret_basic' ELSE 'none' END,
    NULL, '', NULL, 0, tier, state, via, CASE WHEN managed THEN 1 END, managed,
    created, created + interval '2 seconds', COALESCE(ended, created),
    CASE WHEN live THEN now() + make_interval(secs => ttl * (CASE WHEN r_over < 0.01 THEN 3 ELSE r_exp END))
         WHEN state = 'expired' THEN ended
         ELSE created + make_interval(secs => ttl) END,
    ended, ended,
    CASE WHEN state = 'expired' THEN -20 * ln(1 - r_exp * 0.999) END,
    CASE WHEN r_used > 0.2 THEN now() - make_interval(secs => r_used * 40 * 86400) END,
    now() - make_interval(secs => r_exp * 86400), r_sync < 0.003, NULL,
    CASE WHEN NOT managed THEN created END,
    CASE WHEN owner_id = ANY(%(inactive)s::int[]) THEN now() - make_interval(secs => r_exp * 200 * 3600) END,
    CASE WHEN live AND r_stale < 0.03 THEN now() - interval '1 day' END,
    (i %% 4)
FROM (
    SELECT i, verb, noun, tier, state, owner_id, r_team, r_auth, r_over, r_exp, r_used, r_sync, r_stale, managed,
           CASE WHEN NOT managed THEN 'discovered'
                WHEN r_via < 0.67 THEN 'token' ELSE 'software_statement' END AS via,
           state IN ('active', 'suspended', 'provisioning') AS live,
           created,
           CASE WHEN state NOT IN ('active', 'suspended', 'provisioning')
                THEN LEAST(created + make_interval(secs => ttl * r_exp), now()) END AS ended,
           ttl
    FROM (
        SELECT i, verb, noun, tier, owner_id, r_team, r_auth, r_over, r_exp, r_used, r_sync, r_stale, r_via,
               managed, created,
               CASE WHEN r_state < 0.55 THEN 'active' WHEN r_state < 0.59 THEN 'suspended'
                    WHEN r_state < 0.60 THEN 'provisioning' WHEN r_state < 0.76 THEN 'expired'
                    WHEN r_state < 0.90 THEN 'retired' WHEN r_state < 0.95 THEN 'revoked'
                    ELSE 'deprovisioned' END AS state,
               CASE WHEN tier = 'medium' THEN 604800 ELSE 86400 END AS ttl
        FROM (
            SELECT g AS i,
                   (%(verbs)s::text[])[1 + floor(random() * cardinality(%(verbs)s::text[]))::int] AS verb,
                   (%(nouns)s::text[])[1 + floor(random() * cardinality(%(nouns)s::text[]))::int] AS noun,
                   CASE WHEN r_tier < 0.6 THEN 'low' WHEN r_tier < 0.9 THEN 'medium' ELSE 'high' END AS tier,
                   (%(owners)s::int[])[1 + floor(random() * cardinality(%(owners)s::int[]))::int] AS owner_id,
                   random() AS r_state, random() AS r_team, random() AS r_auth, random() AS r_over,
                   random() AS r_exp, random() AS r_used, random() AS r_sync, random() AS r_stale,
                   random() AS r_via, random() > 0.005 AS managed,
                   now() - make_interval(secs => random() * %(days)s * 86400) AS created
            FROM (SELECT g, random() AS r_tier FROM generate_series(0, %(n)s - 1) g) seq
        ) draws
    ) states
) rows
"""

# Spawned children: about 1 in ``modulus`` clients of this run becomes the child of a live client of the
# previous depth created before it (the nearest such id below a random offset), inheriting the owner and
# the parent's first scope, never outliving it. A parent is never a row this pass or a later one turns into a
# child (an id that is a multiple of their modulus): its children would keep what it is about to lose.
LINEAGE_MODULI = {1: 12, 2: 13, 3: 14}  # depth -> 1 in how many clients becomes a child at that depth
_LINEAGE_SQL = """
UPDATE inventory_client c SET
    parent_id = p.id, depth = p.depth + 1, owner_id = p.owner_id, team_id = p.team_id,
    scopes = jsonb_build_array(p.scopes -> 0), created_via = 'spawn',
    expires_at = LEAST(c.expires_at, p.expires_at)
FROM inventory_client p
WHERE c.id > %(base)s AND c.depth = 0 AND c.parent_id IS NULL AND c.managed
  AND c.id %% %(modulus)s = 0 AND c.state IN ('active', 'suspended', 'provisioning')
  AND p.id = c.id - 1 - (c.id %% 97)
  AND p.id > %(base)s AND p.depth = %(depth)s - 1 AND p.state IN ('active', 'suspended', 'provisioning')
  AND p.managed AND (p.depth > 0 OR 0 <> ALL (SELECT p.id %% m FROM unnest(%(moduli)s::int[]) m))
"""

# The clients' client.create events, as the service records them, numbered in creation order.
_AUDIT_SQL = """
INSERT INTO portal_auditevent (id, occurred_at, actor_type, actor_id, actor_label, action, object_type, object_id,
    before, after, reason, policy_version, request_id, prev_hash, hash, log_index)
SELECT %(first)s + n, created_at, 'system', '', 'seed_scale', 'client.create', 'client', registration_id, NULL,
       jsonb_build_object('created_via', created_via, 'owner', owner_id, 'risk_tier', risk_tier, 'scopes', scopes,
                          'state', 'provisioning'),
       'seed_scale', 1, 'seed-scale', '', NULL, %(size)s::bigint + n
FROM (SELECT created_at, registration_id, created_via, owner_id, risk_tier, scopes,
             row_number() OVER (ORDER BY created_at, id) - 1 AS n
      FROM inventory_client WHERE id > %(base)s) c
"""


PENDING_TABLE = "seed_scale_pending"  # exists from a load's commit until it is finished; lists the indexes to build
VACUUM_TABLES = (
    "inventory_client",
    "portal_auditevent",
    "approvals_registrationrequest",
    "approvals_decision",
    "portal_user",
    "inventory_team",
    "inventory_clientcount",
    "inventory_clientownercount",
    "inventory_clientexpirycount",
    "inventory_clientdaycount",
)  # VACUUM sets the visibility map, so the dashboard's counts can be index-only scans


WORK_MEM = "1GB"  # per sort or hash of the load and of each finishing connection: one seed on a 24 GB machine
VACUUM_FIRST = "inventory_client"  # vacuumed before its indexes are built, analyzed after


@dataclass(frozen=True)
class _Task:
    """One finishing step: ``run`` (on whichever connection takes it; may return a line to print) once every
    step named in ``after`` is done."""

    name: str
    run: Callable[[], str | None]
    after: frozenset[str] = frozenset()
    gin: bool = False


def _run_tasks(tasks: list[_Task], *, jobs: int, on_done: Callable[[_Task, float, str | None], None]) -> dict:
    """Run ``tasks`` on ``jobs`` threads (each with its own database connection), each thread taking the first
    ready task in list order; returns each task's seconds. The first failure stops the threads taking new tasks
    and is raised once the running ones end. One job runs them in order on the caller's connection."""
    names = {task.name for task in tasks}
    waiting = [_with_after(task, task.after & names) for task in tasks]
    done: set[str] = set()
    durations: dict[str, float] = {}
    failures: list[BaseException] = []
    changed = threading.Condition()

    def work() -> None:
        while True:
            with changed:
                while True:
                    if failures or not waiting:
                        return
                    task = next((t for t in waiting if t.after <= done), None)
                    if task is not None:
                        waiting.remove(task)
                        break
                    changed.wait()
            began = time.monotonic()
            try:
                message = task.run()
            except BaseException as exc:
                with changed:
                    failures.append(exc)
                    changed.notify_all()
                return
            seconds = time.monotonic() - began
            on_done(task, seconds, message)
            with changed:
                durations[task.name] = seconds
                done.add(task.name)
                changed.notify_all()

    def thread_work() -> None:
        try:
            with connection.cursor() as cursor:
                _session(cursor)
            work()
        finally:
            connection.close()  # this thread's own connection

    if jobs == 1:
        with connection.cursor() as cursor:
            _session(cursor)
        work()
    else:
        threads = [threading.Thread(target=thread_work, daemon=True) for _ in range(min(jobs, len(tasks)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=1)  # wake up for Ctrl-C
    if failures:
        raise failures[0]
    return durations


def _with_after(task: _Task, after: frozenset[str]) -> _Task:
    return _Task(task.name, task.run, after, task.gin)


def _session(cursor) -> None:
    """A finishing connection's settings: room for an index build's sort or GIN accumulation in memory, and for
    the counts' GROUP BYs (at 10M the owner rollup alone has millions of groups: with the default 4 MB they spill to
    disk)."""
    cursor.execute("SET maintenance_work_mem = '1GB'")
    cursor.execute(f"SET work_mem = '{WORK_MEM}'")
    _compress_wal(cursor, local=False)


def _compress_wal(cursor, *, local: bool) -> None:
    """Compress the full-page images in the WAL (lz4) for this transaction (``local``) or session: the lineage
    UPDATEs after each checkpoint and every index build write whole pages, and at 10M the WAL is as large as the
    tables. A superuser setting, and lz4 must be built in: otherwise left as configured."""
    try:
        with transaction.atomic():
            cursor.execute(f"SET {'LOCAL ' if local else ''}wal_compression = lz4")
    except DatabaseError:
        pass


def _execute(sql: str) -> Callable[[], None]:
    def run() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    return run


_INDEX_RE = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ON (?:ONLY )?(\S+) ")


def _index_name_and_table(statement: str) -> tuple[str, str]:
    match = _INDEX_RE.match(statement)
    if match is None:
        raise ValueError(f"not an index definition: {statement[:80]}")
    return match.group(2), match.group(3).rsplit(".", 1)[-1]


def _if_not_exists(statement: str) -> str:
    """``statement`` (pg_indexes' indexdef) as ``CREATE INDEX IF NOT EXISTS``: a finish run again after an
    interruption skips the indexes already built (a plain CREATE INDEX is atomic: built whole or not at all)."""
    return re.sub(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX IF NOT EXISTS ", statement, count=1)


class Command(BaseCommand):
    help = "Load a realistic inventory of N clients (owners, teams, lineage, requests, audit) with COPY."

    def add_arguments(self, parser):
        parser.add_argument("--clients", type=int, default=10_000)
        parser.add_argument("--owners", type=int, default=None, help="default: clients / 200, at least 20")
        parser.add_argument("--teams", type=int, default=None, help="default: owners / 25, at least 5")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--days", type=int, default=365, help="spread creation over this many days")
        parser.add_argument(
            "--no-seal",
            action="store_true",
            help="leave the audit events for the sequencer instead of sealing them here",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=2,
            help="connections that finish the load at once (index builds, counts, VACUUM, seal); default 2",
        )
        parser.add_argument(
            "--finish",
            action="store_true",
            help="complete a load that was committed but not finished (interrupted or failed after the load)",
        )

    def handle(self, *args, **opts):
        n = opts["clients"]
        if n < 1:
            raise CommandError("--clients must be at least 1")
        if opts["jobs"] < 1:
            raise CommandError("--jobs must be at least 1")
        if connection.vendor != "postgresql":
            raise CommandError("seed_scale needs PostgreSQL (it uses COPY).")
        started = time.monotonic()
        pending = self._pending()
        if opts["finish"]:
            if pending is None:
                raise CommandError("nothing to finish: no seed_scale load is waiting for its indexes")
            self._finish(pending, opts)
            self.stdout.write(self.style.SUCCESS(f"seed_scale: finished in {time.monotonic() - started:.1f}s"))
            return
        if pending is not None:
            raise CommandError(
                f"an earlier seed_scale load was committed but never finished ({PENDING_TABLE} lists its "
                "indexes): run `manage.py seed_scale --finish` first"
            )
        owners_n = opts["owners"] or max(20, n // 200)
        teams_n = opts["teams"] or max(5, owners_n // 25)
        statements = self._load(n, owners_n, teams_n, opts)
        try:
            self._finish(statements, opts)
        except (Exception, KeyboardInterrupt) as exc:
            raise CommandError(
                f"seed_scale: the load of {n} clients is committed but was not finished ({exc!r}): indexes, counts, "
                f"VACUUM or the seal may be missing ({PENDING_TABLE} lists the indexes). Run `manage.py seed_scale "
                "--finish` to complete it; every step is idempotent."
            ) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"seed_scale: {n} clients, {owners_n} owners, {teams_n} teams in {time.monotonic() - started:.1f}s"
            )
        )

    def _load(self, n: int, owners_n: int, teams_n: int, opts) -> list[str]:
        """The load, in one transaction: the bulk tables' secondary indexes dropped, every row written, and the
        statements that recreate the indexes recorded in ``PENDING_TABLE``. Returns those statements."""
        rng = random.Random(opts["seed"])
        run = f"{int(time.time()) % 100000:05d}"
        with transaction.atomic():
            with connection.cursor() as cursor:
                fast = self._skip_fk_triggers(cursor)
                _compress_wal(cursor, local=True)
                # the audit events are numbered by a sort of every client: in memory, not in 4 MB runs on disk
                cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
                # Build secondary indexes once after the load instead of maintaining them row by row.
                dropped = self._drop_secondary_indexes(cursor)
                self._record_pending(cursor, dropped)
            owners, teams, idps = self._people(run, owners_n, teams_n, rng)
            self._catalogue()
            t = time.monotonic()
            with connection.cursor() as cursor:
                cursor.execute("SELECT COALESCE(MAX(id), 0) FROM inventory_client")
                base = cursor.fetchone()[0]  # this run's clients come after it
            clients = self._clients_sql(run, n, owners, teams, idps, opts["seed"], opts["days"], base)
            self.stdout.write(
                f"clients: {n} rows in {time.monotonic() - t:.1f}s{'' if fast else ' (FK checks on: not a superuser)'}"
            )
            t = time.monotonic()
            requests = self._requests(clients, rng, run)
            self.stdout.write(f"requests+decisions: {requests} requests in {time.monotonic() - t:.1f}s")
            with connection.cursor() as cursor:
                # COPY as a replica skips the triggers that keep the client's kept flags (approvals.approval_flags,
                # inventory.flag_triggers): the generated scopes are all catalogued and children within their
                # parents by construction, so only the two-person approvals need setting, in one statement.
                cursor.execute(approval_flags.recompute_sql())
            t = time.monotonic()
            events, _preindexed = self._audit(base, preindex=not opts["no_seal"])
            self.stdout.write(f"audit: {events} events in {time.monotonic() - t:.1f}s")
            with connection.cursor() as cursor:
                for table in ("inventory_client", "portal_auditevent", "portal_user", "inventory_team"):
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 (constant names)
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                    )
        return dropped

    # --- finishing: indexes, counts, VACUUM, seal over several connections ------------------------------

    def _pending(self) -> list[str] | None:
        """The index statements an unfinished load left in ``PENDING_TABLE``; None when no load is unfinished."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [PENDING_TABLE])
            if not cursor.fetchone()[0]:
                return None
            cursor.execute(f"SELECT statement FROM {PENDING_TABLE} ORDER BY position")  # noqa: S608 (constant)
            return [row[0] for row in cursor.fetchall()]

    def _record_pending(self, cursor, statements: list[str]) -> None:
        """Note, in the load's transaction, what finishing it must rebuild: committed with the rows, rolled back
        with them, dropped once everything is done."""
        cursor.execute(f"CREATE TABLE {PENDING_TABLE} (position int PRIMARY KEY, statement text NOT NULL)")
        for position, statement in enumerate(statements):
            cursor.execute(
                f"INSERT INTO {PENDING_TABLE} (position, statement) VALUES (%s, %s)",  # noqa: S608 (constant)
                [position, statement],
            )

    def _finish(self, statements: list[str], opts) -> None:
        """Rebuild the dropped indexes, recount the counts, VACUUM ANALYZE and seal the audit log: independent
        steps, run on ``--jobs`` connections at once (a GIN build, the counts' GROUP BYs and the seal each keep
        one core busy), each step waiting only for the steps it needs."""
        t = time.monotonic()
        tasks = self._finish_tasks(statements, seal=not opts["no_seal"])
        durations = _run_tasks(tasks, jobs=opts["jobs"], on_done=self._task_done(opts["verbosity"]))
        indexes = sum(d for name, d in durations.items() if name.startswith("index "))
        vacuum = sum(d for name, d in durations.items() if name.startswith(("vacuum ", "analyze ")))
        self.stdout.write(
            f"finish: {len(tasks)} steps on {min(opts['jobs'], len(tasks))} connections in {time.monotonic() - t:.1f}s"
            f" (indexes {indexes:.1f}s, counts {durations.get('counts', 0):.1f}s, vacuum+analyze {vacuum:.1f}s,"
            f" seal {durations.get('seal', 0):.1f}s, summed over the connections)"
        )
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {PENDING_TABLE}")

    def _task_done(self, verbosity: int):
        lock = threading.Lock()

        def done(task: _Task, seconds: float, message: str | None) -> None:
            with lock:
                if message:
                    self.stdout.write(message)
                if verbosity > 1:
                    self.stdout.write(f"  {seconds:5.1f}s  {task.name[:110]}")

        return done

    def _finish_tasks(self, statements: list[str], *, seal: bool) -> list[_Task]:
        """The finishing steps, longest first (the scheduler takes the first ready one): the counts (~7 GROUP BYs
        over the clients), the audit log's indexes, the GIN builds, the seal, the btree builds; each table's VACUUM
        ANALYZE after its indexes (VACUUM's lock conflicts with CREATE INDEX's), but the clients' VACUUM before
        theirs."""
        by_table: dict[str, set[str]] = {}
        index_tasks = []
        first = f"vacuum {VACUUM_FIRST}"
        for statement in statements:
            name, table = _index_name_and_table(statement)
            task_name = f"index {name}"
            by_table.setdefault(table, set()).add(task_name)
            needs = frozenset({first}) if table == VACUUM_FIRST else frozenset()
            gin = " USING gin " in statement
            index_tasks.append(_Task(task_name, _execute(_if_not_exists(statement)), after=needs, gin=gin))
        # The lineage UPDATEs left a dead row version per child: VACUUMed before the client's indexes are built,
        # they are pruned from the heap alone instead of being looked for in each of ~35 indexes.
        vacuums = {}
        for table in VACUUM_TABLES:
            after = set(by_table.get(table, ()))
            if table.startswith("inventory_client") and table != "inventory_client":
                after.add("counts")
            # ANALYZE after the indexes: it samples the expression indexes too
            sql = f"ANALYZE {table}" if table == VACUUM_FIRST else f"VACUUM (ANALYZE) {table}"
            vacuums[table] = _Task(f"{sql.split()[0].lower()} {table}", _execute(sql), after=frozenset(after))
        tasks = [_Task(first, _execute(f"VACUUM {VACUUM_FIRST}")), _Task("counts", self._counts)]
        # the audit log's indexes and VACUUM early, so that the seal can run beside the GIN builds
        tasks += [task for task in index_tasks if task.name in by_table.get("portal_auditevent", ())]
        tasks.append(vacuums.pop("portal_auditevent"))
        tasks += [task for task in index_tasks if task.gin]
        if seal:
            # After the audit log's VACUUM ANALYZE, as before the finish ran in parallel: the seal read the events
            # 3x slower without it. After the counts: both are mostly Python (hashing the events; tallying and
            # writing the rollup rows), and on one interpreter lock they would only slow each other down.
            tasks.append(_Task("seal", self._seal, after=frozenset({"vacuum portal_auditevent", "counts"})))
        tasks += [task for task in index_tasks if not task.gin and task not in tasks]
        return tasks + list(vacuums.values())

    def _counts(self) -> str:
        # COPY as a replica skips the client table's count triggers: count the loaded clients once.
        t = time.monotonic()
        rows = counts_rebuild()
        return f"counts: {rows} rollup rows rebuilt from the clients in {time.monotonic() - t:.1f}s"

    def _seal(self) -> str:
        t, sealed = time.monotonic(), 0
        # the tiles and checkpoints of events loaded with their indexes (none when they were not): no rewrite
        preindexed = log_seal_preindexed().sealed
        while True:  # anything else waiting (or everything, when the log could not be continued in place)
            report = log_seal(time_budget=60)
            sealed += report.sealed
            if report.busy or not report.sealed:
                break
        if sealed:
            with connection.cursor() as cursor:
                # Sealing wrote every event's log index: until VACUUM, the partial index of unsealed events keeps
                # one dead entry per event, and the log status on every dashboard scanned them (27k pages, 80 ms
                # at 10M). The sequencer seals a few at a time in production, where autovacuum keeps up.
                cursor.execute("VACUUM (ANALYZE) portal_auditevent")
        how = "loaded with their log indexes, sealed in place" if preindexed and not sealed else "sealed"
        return f"audit log: {preindexed + sealed} events {how} in {time.monotonic() - t:.1f}s"

    BULK_TABLES = ("inventory_client", "portal_auditevent", "approvals_registrationrequest", "approvals_decision")

    def _skip_fk_triggers(self, cursor) -> bool:
        """Generated rows are consistent by construction; a superuser may skip the per-row FK triggers."""
        try:
            with transaction.atomic():
                cursor.execute("SET LOCAL session_replication_role = replica")
            return True
        except DatabaseError:
            return False

    def _drop_secondary_indexes(self, cursor) -> list[str]:
        """Drop the bulk tables' non-constraint indexes; return the statements that recreate them."""
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            [list(self.BULK_TABLES)],
        )
        rows = cursor.fetchall()
        for name, _definition in rows:
            cursor.execute(f'DROP INDEX "{name}"')
        return [definition for _name, definition in rows]

    # --- people, teams, IdPs, catalogue ---------------------------------------------------------

    def _people(self, run, owners_n, teams_n, rng):
        User = get_user_model()
        users = [
            User(
                username=f"scale{run}-owner-{i}",
                first_name=rng.choice(["Ana", "Ben", "Chen", "Dara", "Eli"]),
                last_name=f"Owner{i}",
                email=f"scale{run}-owner-{i}@example.com",
                password="!",
                is_active=rng.random() > 0.02,
            )
            for i in range(owners_n)
        ]
        users = User.objects.bulk_create(users, batch_size=5000)
        owner_group = Group.objects.filter(name="owner").first()
        if owner_group:
            owner_group.user_set.through.objects.bulk_create(
                [owner_group.user_set.through(user_id=u.pk, group_id=owner_group.pk) for u in users], batch_size=5000
            )
        teams = Team.objects.bulk_create(
            [Team(name=f"Scale {run} team {i}", slug=f"scale{run}-team-{i}") for i in range(teams_n)], batch_size=5000
        )
        idps = [
            IdPConnection.objects.get_or_create(name=f"scale-idp-{i}", defaults={"kind": IdPKind.DRY_RUN})[0]
            for i in range(3)
        ]
        return users, teams, idps

    def _catalogue(self):
        for name, description, sensitivity, category in DEMO_SCOPES:
            ScopeDefinition.objects.get_or_create(
                name=name, defaults={"sensitivity": sensitivity, "category": category, "description": description}
            )

    # --- clients ------------------------------------------------------------------------------------

    def _clients_sql(self, run, n, owners, teams, idps, seed, days, base):
        """Generate the clients inside PostgreSQL (generate_series + random()), then add lineage in three
        passes (depth 1, 2, 3: a child takes its parent's first scope and a later creation time).
        Returns the rows the requests phase needs (the managed clients of the last REQUEST_DAYS), in creation
        order."""
        idp_state = Client._meta.get_field("idp_state").get_db_prep_value({}, connection)
        owner_ids = [o.pk for o in owners]
        inactive = [o.pk for o in owners if not o.is_active]
        team_ids = [t.pk for t in teams]
        with connection.cursor() as cursor:
            cursor.execute("SELECT setseed(%s)", [((seed % 1000) / 1000.0)])
            cursor.execute(
                _GENERATE_CLIENTS_SQL,
                {
                    "n": n,
                    "base": base,
                    "run": run,
                    "idp_state": idp_state,
                    "days": days,
                    "idps": [i.pk for i in idps],
                    "owners": owner_ids,
                    "inactive": inactive or [0],
                    "teams": team_ids,
                    "verbs": VERBS,
                    "nouns": NOUNS,
                },
            )
            for depth, modulus in LINEAGE_MODULI.items():
                later = [m for d, m in LINEAGE_MODULI.items() if d >= depth]
                cursor.execute(_LINEAGE_SQL, {"base": base, "depth": depth, "modulus": modulus, "moduli": later})
            # the requests cover the last REQUEST_DAYS of managed clients: only those come back to Python
            cursor.execute(
                "SELECT id, registration_id, owner_id, team_id, risk_tier, state, created_at, name, scopes, managed,"
                " created_via FROM inventory_client WHERE id > %s AND managed AND created_at >= %s"
                " ORDER BY created_at, id",
                [base, timezone.now() - timedelta(days=REQUEST_DAYS)],
            )
            rows = cursor.fetchall()
        parsed: dict[str, list] = {}  # Django hands jsonb back as text; only a dozen distinct scope lists exist
        out = []
        for row in rows:
            scopes = row[8]
            if isinstance(scopes, str):
                scopes = parsed.setdefault(scopes, json.loads(scopes))
            out.append((*row[:8], scopes, *row[9:]))
        return out

    # --- registration requests + decisions (last 90 days) -------------------------------------------

    def _requests(self, clients, rng, run):
        now = timezone.now()
        window = now - timedelta(days=REQUEST_DAYS)
        approvers = list(get_user_model().objects.filter(groups__name="approver", is_active=True)[:10])
        if len(approvers) < 2:
            User = get_user_model()
            approvers = User.objects.bulk_create(
                [User(username=f"scale-approver-{i}-{int(time.time())}", password="!") for i in range(2)]
            )
        with connection.cursor() as cursor:
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM approvals_registrationrequest")
            base = cursor.fetchone()[0]
        cols = [
            "id",
            "public_id",
            "kind",
            "state",
            "via",
            "metadata",
            "client_name",
            "software_id",
            "purpose",
            "requested_scopes",
            "requested_ttl",
            "granted_scopes",
            "granted_ttl",
            "audiences",
            "internal_only",
            "owner_id",
            "team_id",
            "client_id",
            "policy_version",
            "risk_tier",
            "outcome",
            "reasons",
            "verdict",
            "approvals_needed",
            "error",
            "decision_reason",
            "statement_subject",
            "created_at",
            "decided_at",
        ]
        decisions = []
        count = 0
        with connection.cursor() as cursor:
            raw = cursor.cursor if hasattr(cursor, "cursor") else cursor
            with raw.copy(f"COPY {RegistrationRequest._meta.db_table} ({', '.join(cols)}) FROM STDIN") as copy:  # noqa: S608
                for pk, reg_id, owner_id, team_id, tier, _state, created, name, scopes, managed, via in clients:
                    if created < window or not managed:
                        continue
                    count += 1
                    rid = base + count
                    human = tier != RiskTier.LOW
                    outcome = "review" if human else "auto_approve"
                    submitted = created - timedelta(seconds=rng.expovariate(1 / 3600) if human else 1)
                    copy.write_row(
                        (
                            rid,
                            reg_id,
                            "registration",
                            "approved",
                            via,
                            "{}",
                            name,
                            "",
                            "seeded",
                            json.dumps(scopes),
                            None,
                            json.dumps(scopes),
                            TTL_BY_TIER[tier],
                            "[]",
                            False,
                            owner_id,
                            team_id,
                            pk,
                            1,
                            tier,
                            outcome,
                            "[]",
                            "{}",
                            2 if tier == RiskTier.HIGH else (1 if human else 0),
                            "",
                            "",
                            "",
                            submitted,
                            created,
                        )
                    )
                    if human:
                        for approver in approvers[: 2 if tier == RiskTier.HIGH else 1]:
                            decisions.append((rid, approver.pk, "approve", "seeded", created))
                # some denials and refusals that never became clients
                for k in range(max(1, count // 20)):
                    count += 1
                    when = now - timedelta(seconds=rng.random() * 89 * 86400)
                    refused = k % 2 == 0
                    copy.write_row(
                        (
                            base + count,
                            f"reg_x{run}{count:09d}",
                            "registration",
                            "refused" if refused else "denied",
                            "token",
                            "{}",
                            "denied-agent",
                            "",
                            "seeded",
                            '["db:prod:read"]',
                            None,
                            "[]",
                            None,
                            "[]",
                            False,
                            None,
                            None,
                            None,
                            1,
                            "refused" if refused else "high",
                            "refuse" if refused else "review",
                            "[]",
                            "{}",
                            0,
                            "",
                            "",
                            "",
                            when,
                            when + timedelta(seconds=0 if refused else rng.expovariate(1 / 7200)),
                        )
                    )
                    if not refused:
                        decisions.append((base + count, approvers[0].pk, "deny", "seeded", when))
        with connection.cursor() as cursor:
            raw = cursor.cursor if hasattr(cursor, "cursor") else cursor
            with raw.copy(
                "COPY approvals_decision (request_id, approver_id, kind, reason, created_at) FROM STDIN"
            ) as cp:
                for row in decisions:
                    cp.write_row(row)
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('approvals_registrationrequest', 'id'), "
                "(SELECT COALESCE(MAX(id), 1) FROM approvals_registrationrequest))"
            )
        return count

    # --- audit log ------------------------------------------------------------------------------------

    def _audit(self, base: int, *, preindex: bool) -> tuple[int, bool]:
        """One ``client.create`` event per client of this run, in creation order, generated in the database from
        the clients (ids given here, after the table's largest: nothing else writes the audit log of a seed
        database). With ``preindex``, and when the log has nothing waiting, they take the log indexes the
        sequencer would give them (the signed tree's size onwards, in id order, the sequencer's lock held to the
        commit), and ``handle`` seals them with ``log_seal_preindexed`` instead of rewriting 10M rows; otherwise
        none, sealed like any event. Returns (events, whether they were indexed)."""
        size = self._log_continues() if preindex else None
        with connection.cursor() as cursor:
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM portal_auditevent")
            first = cursor.fetchone()[0] + 1
            cursor.execute(_AUDIT_SQL, {"base": base, "first": first, "size": size})
            return cursor.rowcount, size is not None

    def _log_continues(self) -> int | None:
        """The signed tree's size when the loaded events can take the next indexes (the sequencer's lock held for
        the rest of the transaction, nothing waiting to be sealed); None otherwise."""
        if not try_lock(connection, SEQUENCER_LOCK):
            return None
        _previous, head = latest_checkpoint()
        with connection.cursor() as cursor:
            cursor.execute('SELECT max("log_index"), bool_or("log_index" IS NULL) FROM portal_auditevent')
            top, waiting = cursor.fetchone()
        if waiting or (top if top is not None else -1) != head.size - 1:
            return None
        return head.size
