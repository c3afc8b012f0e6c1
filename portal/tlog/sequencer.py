"""The sequencer: the only writer of the log's order.

One at a time (an advisory lock), driven by beat every second and nudged after commits, it takes the events
that have no log index yet in id order (``FOR UPDATE SKIP LOCKED``), gives them the next indexes, appends
their RFC 9162 leaf hashes to the tiles, and signs a C2SP checkpoint for the new tree — all in one
transaction, so the stored checkpoints, indexes and tiles always agree. After the commit the checkpoint goes
to the witnesses.

It never builds on what it cannot vouch for: before extending the tree it checks the previous checkpoint's
signature and that the stored tiles reproduce its root. A database-only attacker who rewrote tiles or
checkpoints therefore stops the log (loudly) instead of getting a fork signed.

Writers never wait for it: events are appended with a plain INSERT, and the sequencer only locks rows that
are already committed.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from portal.logs import log_event
from portal.models import AuditEvent, LogCheckpoint, LogTile, LogWitnessReceipt
from portal.tlog import merkle
from portal.tlog.entries import rows_entries, select_list
from portal.tlog.keys import log_signer, log_verifiers
from portal.tlog.locks import SEQUENCER_LOCK, try_lock
from portal.tlog.note import Checkpoint, NoteError, open_checkpoint, parse_checkpoint, parse_note, sign_note
from portal.tlog.tiles import HASH, TILE_WIDTH, TileSet, read_tiles, right_edge
from portal.tlog.witness import witness_publish

logger = logging.getLogger(__name__)
_TABLE = AuditEvent._meta.db_table


class LogStateError(RuntimeError):
    """The stored log does not match its last signed checkpoint: the sequencer refuses to extend it."""


@dataclass
class SealReport:
    sealed: int = 0
    tree_size: int = 0
    checkpoints: list[int] = field(default_factory=list)
    busy: bool = False  # another sequencer held the lock


def log_seal(*, batch_size: int | None = None, time_budget: float | None = None) -> SealReport:
    """Seal what is waiting: batches of ``batch_size`` events, one signed checkpoint each, until nothing is
    left or ``time_budget`` seconds have passed. Then deliver checkpoints to the witnesses (after commit)."""
    batch_size = batch_size or settings.REGISTRAR_LOG_BATCH_SIZE
    deadline = None if time_budget is None else time.monotonic() + time_budget
    return _seal_batches(_seal_batch, batch_size, deadline)


def log_seal_preindexed(*, batch_size: int = 100_000) -> SealReport:
    """Seal events a bulk load appended with their log indexes already given (``seed_scale``: consecutive from
    the last checkpoint's size, in id order, while it held the sequencer's lock): their tiles and one signed
    checkpoint per ``batch_size`` events, without rewriting the events as :func:`log_seal` does (at 10M events
    that rewrite was most of the seal). Refuses (LogStateError) unless the indexes continue the signed tree
    exactly, as the leaves the sequencer would have given them."""
    return _seal_batches(_seal_preindexed_batch, batch_size, None)


def _seal_batches(seal_batch, batch_size: int, deadline: float | None) -> SealReport:
    """``seal_batch(connection, batch_size)`` in one transaction each, holding the sequencer's lock, until it seals
    less than a batch or ``deadline`` passes; then the checkpoints go to the witnesses (after commit)."""
    report = SealReport()
    while True:
        with transaction.atomic():
            connection = transaction.get_connection()
            if not try_lock(connection, SEQUENCER_LOCK):
                report.busy = True
                break
            checkpoint, sealed = seal_batch(connection, batch_size)
        if checkpoint is None:
            break
        report.sealed += sealed
        report.tree_size = checkpoint.tree_size
        report.checkpoints.append(checkpoint.tree_size)
        log_event(logger, "log_sealed", events=sealed, tree_size=checkpoint.tree_size)
        if sealed < batch_size or (deadline is not None and time.monotonic() >= deadline):
            break
    transaction.on_commit(witness_publish)
    return report


def log_seal_through(event_id: int, *, timeout: float, poll: float = 0.05) -> bool:
    """Seal inline until the (committed) event ``event_id`` is in a signed checkpoint; whether it is.

    For an interface that must hand out a proof now (an evidence pack's export event). Another sequencer
    holding the lock is waited for, polling, until ``timeout`` seconds have passed — then the caller says "not
    sealed yet" rather than keep a person waiting. Registrations and approvals never call this: their events
    are sealed by beat and the nudge."""
    deadline = time.monotonic() + timeout
    sealed = AuditEvent.objects.filter(pk=event_id, log_index__isnull=False)
    while True:
        log_seal(time_budget=max(0.0, deadline - time.monotonic()))
        if sealed.exists():  # the index and the checkpoint covering it are written in one transaction
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def latest_checkpoint(*, verify: bool = True) -> tuple[LogCheckpoint | None, Checkpoint]:
    """The last stored checkpoint and its parsed (and, with ``verify``, signature-checked) content."""
    stored = LogCheckpoint.objects.order_by("-tree_size").first()
    if stored is None:
        return None, Checkpoint("", 0, merkle.EMPTY_ROOT)
    if not verify:
        return stored, parse_checkpoint(parse_note(stored.note).text)
    try:
        parsed, _ = open_checkpoint(stored.note, log_verifiers())
    except NoteError as exc:
        raise LogStateError(f"checkpoint {stored.tree_size} does not verify with the log's keys: {exc}")
    if parsed.size != stored.tree_size or parsed.root.hex() != stored.root_hash:
        raise LogStateError(f"checkpoint {stored.tree_size}: its row does not match its signed note")
    return stored, parsed


def _seal_batch(connection, batch_size: int) -> tuple[LogCheckpoint | None, int]:
    signer = log_signer()
    previous, head = latest_checkpoint()
    size = head.size
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT max("log_index") FROM {_TABLE}')  # noqa: S608
        top = cursor.fetchone()[0]
        if (top if top is not None else -1) != size - 1:
            raise LogStateError(f"events are indexed up to {top} but the last checkpoint has size {size}")
        lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
        cursor.execute(
            f'SELECT {select_list(connection.vendor)} FROM {_TABLE} WHERE "log_index" IS NULL '  # noqa: S608
            f'ORDER BY "id" LIMIT %s{lock}',
            [batch_size],
        )
        rows = cursor.fetchall()
    if not rows:
        return None, 0

    ids = [row[0] for row in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f'UPDATE {_TABLE} AS e SET "log_index" = v.idx '  # noqa: S608
                "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, idx) WHERE e.id = v.id",
                [ids, list(range(size, size + len(rows)))],
            )
        else:
            cursor.executemany(
                f'UPDATE {_TABLE} SET "log_index" = %s WHERE "id" = %s',  # noqa: S608
                list(zip(range(size, size + len(rows)), ids, strict=True)),
            )
    return _extend(connection, signer, size, head.root, rows), len(rows)


def _extend(connection, signer, size: int, root: bytes, rows: list[tuple]) -> LogCheckpoint:
    """Append the entries of ``rows`` (selected with ``select_list``, indexed ``size`` onwards) to the tree of
    ``size`` leaves with ``root``: its tiles and a new signed checkpoint."""
    tiles = _edge_tiles(size, root)
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + entry).digest() for entry in rows_entries(rows, connection.vendor)]
    dirty = append_leaves(tiles, size, leaves)
    new_size = size + len(rows)
    new_root = merkle.root(new_size, tiles.node)
    LogTile.objects.bulk_create(
        [LogTile(level=level, tile_index=index, hashes=bytes(tiles.tiles[(level, index)])) for level, index in dirty],
        update_conflicts=True,
        unique_fields=["level", "tile_index"],
        update_fields=["hashes"],
    )
    note = sign_note(Checkpoint(signer.name, new_size, new_root).text, [signer])
    return LogCheckpoint.objects.create(
        tree_size=new_size, root_hash=new_root.hex(), note=note, created_at=timezone.now()
    )


def _seal_preindexed_batch(connection, batch_size: int) -> tuple[LogCheckpoint | None, int]:
    """The next ``batch_size`` events already indexed past the signed tree (:func:`log_seal_preindexed`)."""
    signer = log_signer()
    _previous, head = latest_checkpoint()
    size = head.size
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT {select_list(connection.vendor)}, "log_index" FROM {_TABLE} '  # noqa: S608
            'WHERE "log_index" >= %s ORDER BY "log_index" LIMIT %s',
            [size, batch_size],
        )
        rows = cursor.fetchall()
    if not rows:
        return None, 0
    indexes = [row[-1] for row in rows]
    ids = [row[0] for row in rows]
    if indexes != list(range(size, size + len(rows))) or ids != sorted(ids):
        raise LogStateError(f"the events indexed from {size} do not continue the tree in id order")
    return _extend(connection, signer, size, head.root, [row[:-1] for row in rows]), len(rows)


def _edge_tiles(size: int, root: bytes) -> TileSet:
    """The right edge of the stored tree of ``size`` leaves, checked against the signed ``root``."""
    edge = right_edge(size)
    stored = read_tiles(edge)
    tiles = TileSet()
    for key, width in edge.items():
        hashes = stored.tiles.get(key, b"")
        if len(hashes) != width * HASH:
            raise LogStateError(
                f"tile {key[0]}/{key[1]} holds {len(hashes) // HASH} hashes; the tree of size {size} needs {width}"
            )
        tiles.tiles[key] = bytearray(hashes)
    if merkle.root(size, tiles.node) != root:
        raise LogStateError(f"the stored tiles do not reproduce the root of checkpoint {size}")
    return tiles


def append_leaves(tiles: TileSet, size: int, leaves: list[bytes]) -> list[tuple[int, int]]:
    """Append leaf hashes to a tree of ``size`` leaves whose right-edge tiles are in ``tiles``; a tile that
    fills up adds its root to the level above. Returns the tiles written, lowest level first."""
    dirty: dict[tuple[int, int], None] = {}
    for leaf in leaves:
        level, count, value = 0, size, leaf
        while True:
            key = (level, count // TILE_WIDTH)
            tile = tiles.tiles.get(key)
            if tile is None:
                tile = tiles.tiles[key] = bytearray()
            tile += value
            dirty[key] = None
            if len(tile) < TILE_WIDTH * HASH:
                break
            value = merkle.perfect_root([bytes(tile[i : i + HASH]) for i in range(0, len(tile), HASH)])
            level, count = level + 1, count // TILE_WIDTH
        size += 1
    return list(dirty)


def log_status(now=None) -> dict:
    """For dashboards, in one query: the seal lag, and the latest checkpoint with when a witness got it."""
    now = now or timezone.now()
    oldest = AuditEvent.objects.filter(log_index__isnull=True).order_by("id").values("occurred_at")[:1]
    witnessed = (
        LogWitnessReceipt.objects.filter(checkpoint=OuterRef("pk")).order_by("witnessed_at").values("witnessed_at")[:1]
    )
    row = (
        LogCheckpoint.objects.order_by("-tree_size")
        .annotate(oldest=Subquery(oldest), witnessed_at=Subquery(witnessed))
        .values("tree_size", "created_at", "witnessed_at", "oldest")
        .first()
    )
    if row is None:
        return {"seal_lag_seconds": seal_lag_seconds(now), "tree_size": 0, "checkpoint_at": None, "witnessed_at": None}
    lag = max(0.0, (now - row["oldest"]).total_seconds()) if row["oldest"] else 0.0
    return {
        "seal_lag_seconds": lag,
        "tree_size": row["tree_size"],
        "checkpoint_at": row["created_at"],
        "witnessed_at": row["witnessed_at"],
    }


_OLDEST_WAITING = f'SELECT "occurred_at" FROM {_TABLE} WHERE "log_index" IS NULL ORDER BY "id" LIMIT 1'  # noqa: S608


def seal_lag_seconds(now=None) -> float:
    """How long the oldest event still waiting for a log index has waited (0 when none waits).

    Written out rather than through the ORM: /healthz answers it on every probe, and compiling the query cost
    more than the rest of the health check."""
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        cursor.execute(_OLDEST_WAITING)
        row = cursor.fetchone()
    if row is None:
        return 0.0
    oldest = row[0]
    if isinstance(oldest, str):  # SQLite returns its stored text
        oldest = datetime.datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=datetime.UTC)
    return max(0.0, ((now or timezone.now()) - oldest).total_seconds())
