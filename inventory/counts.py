"""Counts kept as rows change: folding the deltas, recounting from the source tables, repairing drift.

The machinery is generic over *count sources* (:class:`CountSource`): a table whose trigger
(``inventory.count_triggers``) writes insert-only deltas, the rollups they fold into, and how to recount those
from the table. The clients are inventory's source (below); approvals registers its registration requests'
(``approvals.counts``) at start-up, so one folder, one reconcile and one rebuild serve both.

The client table's trigger (migration ``0018_client_count_triggers``) inserts a -1 delta for the signature a
client had and a +1 delta for the one it has, in the transaction that changes it: every path (the lifecycle
services, sweeps, outbox flags, reconciliation, admin, SCIM, seeds) is counted, and no writer updates a
shared row. :func:`counts_fold` (beat, every few seconds; ``manage.py fold_counts``) moves the deltas into the
rollup tables; readers add the deltas not yet folded (``inventory.selectors.counts``), so the figures are exact
whether or not the folder has run. :func:`counts_reconcile` (beat, nightly; ``manage.py reconcile_counts``)
recounts every rollup from the clients, reports drift and, asked to, repairs it with one audit event.

A rollup keyed by team (and owner) grows with teams × owners: at 10M clients, 2,000 teams and 50,000 owners the
clients' rollups hold 3.3M rows, and an all-teams read sums hundreds of thousands of them. Each source therefore
declares :class:`Projection` s — the same counts without the team — which the folder, the recount and the
repair derive from the rollup's own tally, so they can never disagree with it.

Over 400 lines on purpose: the generic folder, reconcile and rebuild, the projections they derive, and the
clients' own source (their keys, tally, recount and projections) read as one unit — the clients' source is the
worked example the generic code is shaped by, and a split would put each half's only caller in the other file.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Coalesce, TruncDate, TruncHour, TruncWeek
from django.utils.dateparse import parse_date, parse_datetime

from inventory import flag_triggers
from inventory.choices import LIVE_STATES, ClientState
from inventory.count_triggers import COUNTS_LOCK  # one folder (or a repair, or a migration) at a time
from inventory.histograms import seconds_bucket
from inventory.lifecycle_policies.evaluate import BASE
from inventory.lifecycle_policies.rules import ATTESTATION
from inventory.models import (
    CLIENT_COUNT_KEY,
    Client,
    ClientAttestCount,
    ClientAttestDayCount,
    ClientCount,
    ClientCountAllTeams,
    ClientCountDelta,
    ClientDayCount,
    ClientDayCountAllTeams,
    ClientExpiryCount,
    ClientExpiryCountAllTeams,
    ClientOrphanCount,
    ClientOrphanCountAllTeams,
    ClientOvershootCount,
    ClientOvershootCountAllTeams,
    ClientOwnerCount,
    ClientOwnerLiveCount,
    ClientTeamCount,
)
from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)

FOLD_BATCH = 50_000

CUBE_KEYS = CLIENT_COUNT_KEY
OWNER_KEYS = ("owner_id", "team_id", "state")
EXPIRY_KEYS = ("team_id", "state", "risk_tier", "expires_hour")
DAY_KEYS = ("day", "team_id", "kind")
OVERSHOOT_KEYS = ("team_id", "bucket")
ATTEST_KEYS = ("team_id", "risk_tier", "week")
ATTEST_DAY_KEYS = ("risk_tier", "day")
ORPHAN_KEYS = ("team_id", "orphaned_hour")
CUBE_BOOLEANS = frozenset(
    {"managed", "orphaned", "stale", "sync_failed", "drifted", "no_purpose", "no_expiry", "two_person"}
)
# the states the orphan-grace control fails (a suspended orphan holds no live credentials)
ORPHAN_COUNTED_STATES = frozenset({ClientState.ACTIVE, ClientState.PROVISIONING})

Rollups = Mapping[str, tuple[type[models.Model], tuple[str, ...]]]


@dataclass(frozen=True)
class Projection:
    """A coarser copy of rollup ``of``: its ``keys`` (a subset of ``of``'s, in any order), summed over the rest,
    only over the keys ``where`` accepts (a test of the key as a dict; None: all). Kept by the same folder,
    recounted and repaired with its rollup: a reader that needs no team or owner reads a few thousand rows
    instead of one per team × owner (docs/scale.md, "All-teams projections")."""

    model: type[models.Model]
    keys: tuple[str, ...]
    of: str
    where: Callable[[dict[str, Any]], bool] | None = None


# the clients' rollup tables: name -> (model, key columns)
ROLLUPS: Rollups = {
    "cube": (ClientCount, CUBE_KEYS),
    "owner": (ClientOwnerCount, OWNER_KEYS),
    "expiry": (ClientExpiryCount, EXPIRY_KEYS),
    "day": (ClientDayCount, DAY_KEYS),
    "overshoot": (ClientOvershootCount, OVERSHOOT_KEYS),
    "attest": (ClientAttestCount, ATTEST_KEYS),
    "attest_day": (ClientAttestDayCount, ATTEST_DAY_KEYS),
    "orphan": (ClientOrphanCount, ORPHAN_KEYS),
}
_DELTA_COLUMNS = (
    "n",
    "state",
    "risk_tier",
    "team_id",
    "idp_id",
    "owner_id",
    "created_via",
    "depth",
    "auth_method",
    "managed",
    "orphaned",
    "stale",
    "sync_failed",
    "drifted",
    "no_purpose",
    "created_at",
    "ended_at",
    "expires_at",
    "expiry_overshoot_seconds",
    "attest_basis",
    "two_person",
    "orphaned_at",
)

Tallies = dict[str, Counter]


@dataclass(frozen=True)
class CountSource:
    """A counted table: its trigger's ``delta`` model (columns ``delta_columns``, ``n`` first), the ``rollups``
    its deltas fold into (names unique across sources), ``tally`` (delta rows → additions per rollup, the one
    place a row's keys are worked out), ``recount`` (every rollup from the table), ``normal_key`` (a rollup or
    projection key as read back, in the form ``tally`` makes) and ``projections`` (coarser copies of rollups,
    derived from ``tally`` and ``recount`` here, never by the source)."""

    name: str
    delta: type[models.Model]
    delta_columns: tuple[str, ...]
    rollups: Rollups
    tally: Callable[[Iterable[tuple]], Tallies]
    recount: Callable[[], Tallies]
    normal_key: Callable[[str, tuple], tuple]
    projections: Mapping[str, Projection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, projection in self.projections.items():
            parent_keys = self.rollups[projection.of][1]
            if name in self.rollups or not set(projection.keys) <= set(parent_keys):
                raise ValueError(f"projection {name}: keys must be a subset of {projection.of}'s, under a new name")

    @property
    def tables(self) -> Rollups:
        """Every table the source keeps: its rollups and their projections, name -> (model, key columns)."""
        return {**self.rollups, **{name: (p.model, p.keys) for name, p in self.projections.items()}}

    def project(self, tallies: Tallies) -> Tallies:
        """``tallies`` of the rollups with each projection's tally added (the one place a projection is
        derived: the folder, the recount and the reading of unfolded deltas all come through here)."""
        out = dict(tallies)
        for name, projection in self.projections.items():
            parent_keys = self.rollups[projection.of][1]
            positions = [parent_keys.index(column) for column in projection.keys]
            tally: Counter = Counter()
            for key, n in tallies.get(projection.of, Counter()).items():
                if projection.where is None or projection.where(dict(zip(parent_keys, key, strict=True))):
                    tally[tuple(key[i] for i in positions)] += n
            out[name] = Counter({k: v for k, v in tally.items() if v})
        return out

    def tally_all(self, rows: Iterable[tuple]) -> Tallies:
        return self.project(self.tally(rows))

    def recount_all(self) -> Tallies:
        return self.project(self.recount())


_sources: dict[str, CountSource] = {}


def count_source_register(source: CountSource) -> None:
    """Count ``source`` with the clients (another app registers its own from ``AppConfig.ready()``)."""
    taken = {n for other in _sources.values() if other.name != source.name for n in other.tables}
    clash = taken & set(source.tables)
    if clash:
        raise ValueError(f"rollup names already taken: {sorted(clash)}")
    _sources[source.name] = source


def count_sources() -> list[CountSource]:
    return list(_sources.values())


@dataclass(frozen=True)
class KeptFlags:
    """Client columns a database trigger keeps (``inventory.flag_triggers``, ``approvals.approval_flags``):
    ``drift_sql(vendor)`` counts the rows whose columns differ from a recomputation, ``repair_sql(vendor)`` sets
    them. Checked and repaired with the counts by :func:`counts_reconcile`."""

    name: str
    drift_sql: Callable[[str], str]
    repair_sql: Callable[[str], str]


_kept_flags: dict[str, KeptFlags] = {}


def kept_flags_register(flags: KeptFlags) -> None:
    _kept_flags[flags.name] = flags


def kept_flags_drift() -> dict[str, int]:
    out = {}
    with connection.cursor() as cursor:
        for flags in _kept_flags.values():
            cursor.execute(flags.drift_sql(connection.vendor))
            out[flags.name] = int(cursor.fetchone()[0])
    return out


def _rollup(name: str) -> tuple[type[models.Model], tuple[str, ...]]:
    for source in _sources.values():
        if name in source.tables:
            return source.tables[name]
    raise KeyError(name)


def as_datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if value is not None and value.tzinfo else _utc(value)
    return _utc(parse_datetime(value))


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def as_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    parsed = value if isinstance(value, date) else parse_date(str(value)[:10])
    if parsed is None:
        raise ValueError(f"not a date: {value!r}")
    return parsed


def week_of(moment: datetime) -> date:
    """The Monday of ``moment``'s UTC week (what TruncWeek gives, as a date)."""
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _tally_deltas(rows: Iterable[tuple]) -> Tallies:
    """Client deltas (rows in ``_DELTA_COLUMNS`` order) as additions to each of the clients' rollups."""
    out: Tallies = {name: Counter() for name in ROLLUPS}
    for row in rows:
        d = dict(zip(_DELTA_COLUMNS, row, strict=True))
        n = d["n"]
        created, ended, expires = (as_datetime(d[k]) for k in ("created_at", "ended_at", "expires_at"))
        flags = tuple(bool(d[k]) for k in ("managed", "orphaned", "stale", "sync_failed", "drifted", "no_purpose"))
        out["cube"][
            (d["team_id"], d["state"], d["risk_tier"], d["idp_id"], d["created_via"], d["depth"], d["auth_method"])
            + flags
            + (expires is None, bool(d["two_person"]))
        ] += n
        out["owner"][(d["owner_id"], d["team_id"], d["state"])] += n
        if expires is not None and d["state"] in LIVE_STATES:  # ended clients' expiries are history: not kept
            out["expiry"][(d["team_id"], d["state"], d["risk_tier"], hour_of(expires))] += n
        if created is not None:  # never None: created_at is NOT NULL
            out["day"][(created.date(), d["team_id"], "created")] += n
        if ended is not None:
            out["day"][(ended.date(), d["team_id"], "ended")] += n
        if d["expiry_overshoot_seconds"] is not None:
            out["overshoot"][(d["team_id"], seconds_bucket(d["expiry_overshoot_seconds"]))] += n
        basis = as_datetime(d["attest_basis"])
        if d["state"] == ClientState.ACTIVE and d["managed"] and basis is not None:
            out["attest"][(d["team_id"], d["risk_tier"], week_of(basis))] += n
            out["attest_day"][(d["risk_tier"], basis.date())] += n
        orphaned_at = as_datetime(d["orphaned_at"])
        if orphaned_at is not None and d["state"] in ORPHAN_COUNTED_STATES:
            out["orphan"][(d["team_id"], hour_of(orphaned_at))] += n
    return nonzero(out)


def nonzero(tallies: Tallies) -> Tallies:
    return {name: Counter({k: v for k, v in tally.items() if v}) for name, tally in tallies.items()}


def _upsert(name: str, tally: Counter) -> None:
    """Add ``tally`` to rollup ``name``: one INSERT … ON CONFLICT per key (PostgreSQL and SQLite alike), in
    key order so two folders could never deadlock."""
    if not tally:
        return
    model, keys = _rollup(name)
    table = model._meta.db_table
    columns = ", ".join(keys)
    placeholders = ", ".join(["%s"] * (len(keys) + 1))
    sql = (
        f"INSERT INTO {table} ({columns}, n) VALUES ({placeholders}) "  # noqa: S608 - constants of this module
        f"ON CONFLICT ({columns}) DO UPDATE SET n = {table}.n + excluded.n"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(*key, n) for key, n in sorted(tally.items(), key=lambda kv: repr(kv[0]))])


def _try_lock(blocking: bool = False) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: IMMEDIATE transactions already queue writers
    with connection.cursor() as cursor:
        if blocking:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [COUNTS_LOCK])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [COUNTS_LOCK])
        return bool(cursor.fetchone()[0])


def counts_fold(*, batch: int = FOLD_BATCH) -> int:
    """Fold the committed deltas of every source into its rollups, ``batch`` at a time; returns how many were
    folded.

    Each batch is one transaction: ``DELETE … RETURNING`` takes the deltas (each exactly once, whatever else
    runs), their sums are added to the rollups, and both commit together. A second folder returns at once."""
    folded = 0
    for source in count_sources():
        done = _fold_source(source, batch)
        if done is None:
            return folded
        folded += done
    if folded:
        log_event(logger, "counts_folded", deltas=folded)
    return folded


def _fold_source(source: CountSource, batch: int) -> int | None:
    """Fold one source's deltas; None when another folder holds the lock."""
    delta_table = source.delta._meta.db_table
    sql = (
        f"DELETE FROM {delta_table} WHERE id IN (SELECT id FROM {delta_table} ORDER BY id LIMIT %s) "  # noqa: S608
        f"RETURNING {', '.join(source.delta_columns)}"
    )
    folded = 0
    while True:
        with transaction.atomic():
            if not _try_lock():
                return folded or None
            with connection.cursor() as cursor:
                cursor.execute(sql, [batch])
                rows = cursor.fetchall()
            for name, tally in source.tally_all(rows).items():
                _upsert(name, tally)
        folded += len(rows)
        if len(rows) < batch:
            return folded


# --- recount and reconcile ---------------------------------------------------------------------------------------


def _flag(condition: Q) -> ExpressionWrapper:
    return ExpressionWrapper(condition, output_field=BooleanField())


def _grouped(queryset, **expressions):
    names = list(expressions)
    return queryset.values(**expressions).annotate(n=Count("*")).values_list(*names, "n")


def counts_recount() -> Tallies:
    """Every rollup of every source recomputed from its table (full scans: nightly, not per request)."""
    out: Tallies = {}
    for source in count_sources():
        out.update(source.recount_all())
    return out


# When an active client's attestation period started: the attestation rule's own clock (lifecycle_policies'
# BASE), which the trigger's attest_basis (migration 0025), the recount and the control's edge all count by.
ATTEST_BASIS = Coalesce(*BASE[ATTESTATION])


def _client_recount() -> Tallies:
    """The clients' rollups recomputed from the clients."""
    team = Coalesce("team_id", Value(0))
    owner = Coalesce("owner_id", Value(0))
    clients = Client.objects.order_by()
    cube = _grouped(
        clients,
        k_team=team,
        k_state=F("state"),
        k_tier=F("risk_tier"),
        k_idp=F("idp_id"),
        k_via=F("created_via"),
        k_depth=F("depth"),
        k_auth=F("auth_method"),
        k_managed=_flag(Q(managed=True)),
        k_orphaned=_flag(Q(orphaned_at__isnull=False)),
        k_stale=_flag(Q(stale_at__isnull=False)),
        k_failed=_flag(Q(sync_failed=True)),
        k_drifted=_flag(Q(drift__isnull=False)),
        k_no_purpose=_flag(Q(purpose="")),
        k_no_expiry=_flag(Q(expires_at__isnull=True)),
        k_two_person=_flag(Q(two_person_approved=True)),
    )
    owners = _grouped(clients, k_owner=owner, k_team=team, k_state=F("state"))
    expiry = _grouped(
        clients.filter(expires_at__isnull=False, state__in=LIVE_STATES),
        k_team=team,
        k_state=F("state"),
        k_tier=F("risk_tier"),
        k_hour=TruncHour("expires_at", tzinfo=UTC),
    )
    created = _grouped(clients, k_day=TruncDate("created_at", tzinfo=UTC), k_team=team)
    ended = _grouped(clients.filter(ended_at__isnull=False), k_day=TruncDate("ended_at", tzinfo=UTC), k_team=team)
    overshoot = _grouped(
        clients.filter(expiry_overshoot_seconds__isnull=False), k_team=team, k_seconds=F("expiry_overshoot_seconds")
    )
    attest = _grouped(
        clients.filter(state=ClientState.ACTIVE, managed=True),
        k_team=team,
        k_tier=F("risk_tier"),
        k_week=TruncWeek(ATTEST_BASIS, tzinfo=UTC),
    )
    orphans = _grouped(
        clients.filter(orphaned_at__isnull=False, state__in=ORPHAN_COUNTED_STATES),
        k_team=team,
        k_hour=TruncHour("orphaned_at", tzinfo=UTC),
    )
    attest_days = _grouped(
        clients.filter(state=ClientState.ACTIVE, managed=True),
        k_tier=F("risk_tier"),
        k_day=TruncDate(ATTEST_BASIS, tzinfo=UTC),
    )
    out: Tallies = {name: Counter() for name in ROLLUPS}
    for *key, n in attest_days:
        out["attest_day"][normal_key("attest_day", key)] += n
    for *key, n in orphans:
        out["orphan"][normal_key("orphan", key)] += n
    for *key, n in attest:
        out["attest"][normal_key("attest", key)] += n
    for *key, n in cube:
        out["cube"][normal_key("cube", key)] += n
    for *key, n in owners:
        out["owner"][normal_key("owner", key)] += n
    for *key, n in expiry:
        out["expiry"][normal_key("expiry", key)] += n
    for day, team_id, n in created:
        out["day"][normal_key("day", (day, team_id, "created"))] += n
    for day, team_id, n in ended:
        out["day"][normal_key("day", (day, team_id, "ended"))] += n
    for team_id, seconds, n in overshoot:
        out["overshoot"][(team_id, seconds_bucket(seconds))] += n
    return out


def normal_key(name: str, key) -> tuple:
    """A rollup key in one form whatever the engine returned (SQLite: strings for dates, 0/1 for booleans)."""
    keys = _KEYS[name]
    out = []
    for column, value in zip(keys, key, strict=True):
        if column in CUBE_BOOLEANS:
            value = bool(value)
        elif column in ("expires_hour", "orphaned_hour"):
            value = as_datetime(value)
        elif column in ("day", "week"):
            value = as_date(value)
        out.append(value)
    return tuple(out)


def counts_current() -> Tallies:
    """What the rollups of every source say now: the folded rows plus the deltas not yet folded, from one
    snapshot (call it in a transaction that sees one: :func:`counts_reconcile` does)."""
    out: Tallies = {}
    for source in count_sources():
        current: Tallies = {name: Counter() for name in source.tables}
        for name, (model, keys) in source.tables.items():
            for *key, n in model._default_manager.order_by().values_list(*keys, "n"):
                current[name][source.normal_key(name, tuple(key))] += n
        delta_rows = source.delta._default_manager.order_by().values_list(*source.delta_columns)
        for name, tally in source.tally_all(delta_rows).items():
            current[name].update(tally)
        out.update(nonzero(current))
    return out


@dataclass
class Drift:
    """Per rollup, the corrections that make it equal the recount (recount − current, non-zero only)."""

    corrections: dict[str, Counter] = field(default_factory=dict)
    repaired: bool = False
    flags: dict[str, int] = field(default_factory=dict)  # kept flags (KeptFlags) -> rows whose flags are wrong

    @property
    def keys(self) -> int:
        return sum(len(c) for c in self.corrections.values()) + sum(1 for n in self.flags.values() if n)

    @property
    def clients(self) -> int:
        return sum(abs(n) for c in self.corrections.values() for n in c.values()) + sum(self.flags.values())

    def summary(self) -> dict[str, dict[str, int]]:
        out = {
            name: {"keys": len(c), "off_by": sum(abs(n) for n in c.values())}
            for name, c in self.corrections.items()
            if c
        }
        out.update({f"flags:{name}": {"keys": 1, "off_by": n} for name, n in self.flags.items() if n})
        return out


def _diff(recount: Tallies, current: Tallies) -> Drift:
    corrections = {}
    for name in recount:
        diff = Counter(recount[name])
        diff.subtract(current[name])
        corrections[name] = Counter({k: v for k, v in diff.items() if v})
    return Drift(corrections)


def counts_reconcile(*, repair: bool = False, actor: Actor | None = None) -> Drift:
    """Recount every rollup from its table and compare it with what the rollups say; with ``repair``, add the
    corrections to the folded rows and record one audit event (``counts.repaired``).

    On PostgreSQL the comparison runs in one REPEATABLE READ snapshot while the folder is kept out (the same
    advisory lock), so writes committed meanwhile are in neither side and never look like drift."""
    outer = connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        _try_lock(blocking=True)
        drift = _diff(counts_recount(), counts_current())
        drift.flags = kept_flags_drift()
        if drift.keys:
            log_event(logger, "counts_drift", level=logging.WARNING, keys=drift.keys, off_by=drift.clients)
        if repair and drift.keys:
            for name, tally in drift.corrections.items():
                _upsert(name, tally)
                if tally:
                    _rollup(name)[0]._default_manager.filter(n=0).delete()
            with connection.cursor() as cursor:
                for name, wrong in drift.flags.items():
                    if wrong:
                        cursor.execute(_kept_flags[name].repair_sql(connection.vendor))
            audit_record(
                actor=actor or Actor.system("reconcile_counts"),
                action="counts.repaired",
                object_type="counts",
                object_id=",".join(
                    [s.name for s in count_sources() if any(drift.corrections.get(r) for r in s.tables)]
                    + [f"flags:{name}" for name, n in drift.flags.items() if n]
                ),
                after={"drift": drift.summary()},
                reason="the rollups differed from a recount of their tables",
            )
            drift.repaired = True
    return drift


def counts_rebuild() -> int:
    """Replace every rollup of every source by a recount and drop the pending deltas; returns the rollup rows.

    For bulk loads that bypass the triggers (``seed_scale`` loads with COPY as ``session_replication_role =
    replica``): run it in the load's transaction, or with nothing else writing the counted tables."""
    with transaction.atomic():
        _try_lock(blocking=True)
        for source in count_sources():
            source.delta._default_manager.all().delete()
            for model, _keys in source.tables.values():
                model._default_manager.all().delete()
        tallies = counts_recount()
        for name, tally in tallies.items():
            _fill(name, Counter({k: v for k, v in tally.items() if v}))
    rows = sum(len(t) for t in tallies.values())
    log_event(logger, "counts_rebuilt", rows=rows)
    return rows


def _fill(name: str, tally: Counter) -> None:
    """Write ``tally`` into rollup ``name``, emptied by the caller: COPY on PostgreSQL (at 10M the rebuild writes
    3.3M rollup rows, which one ``INSERT … ON CONFLICT`` each took minutes to write), the upsert elsewhere."""
    if connection.vendor != "postgresql" or not tally:
        _upsert(name, tally)
        return
    model, keys = _rollup(name)
    with (
        connection.cursor() as cursor,
        cursor.copy(
            f"COPY {model._meta.db_table} ({', '.join(keys)}, n) FROM STDIN"  # constants of this module
        ) as copy,
    ):
        for key, n in tally.items():
            copy.write_row((*key, n))


def _live_only(key: dict[str, Any]) -> bool:
    return key["state"] in LIVE_STATES


# The all-teams projections of the clients' rollups: what the security dashboard and the all-teams framework
# report read (inventory.selectors.counts picks the smallest table that holds the columns a read needs).
PROJECTIONS = {
    "cube_all": Projection(ClientCountAllTeams, CUBE_KEYS[1:], "cube"),
    "team": Projection(ClientTeamCount, ("team_id", "state"), "cube"),
    "owner_live": Projection(ClientOwnerLiveCount, ("owner_id",), "owner", where=_live_only),
    "expiry_all": Projection(ClientExpiryCountAllTeams, ("state", "risk_tier", "expires_hour"), "expiry"),
    "day_all": Projection(ClientDayCountAllTeams, ("day", "kind"), "day"),
    "overshoot_all": Projection(ClientOvershootCountAllTeams, ("bucket",), "overshoot"),
    "orphan_all": Projection(ClientOrphanCountAllTeams, ORPHAN_KEYS[1:], "orphan"),
}
_KEYS = {**{name: keys for name, (_model, keys) in ROLLUPS.items()}, **{n: p.keys for n, p in PROJECTIONS.items()}}

count_source_register(
    CountSource(
        name="clients",
        delta=ClientCountDelta,
        delta_columns=_DELTA_COLUMNS,
        rollups=ROLLUPS,
        tally=_tally_deltas,
        recount=_client_recount,
        normal_key=normal_key,
        projections=PROJECTIONS,
    )
)

kept_flags_register(KeptFlags("clients", flag_triggers.drift_sql, flag_triggers.recompute_sql))
