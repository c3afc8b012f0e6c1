"""Verify the audit log from the events up (``manage.py verify_audit``).

One module on purpose (over 400 lines): the verifier is read as one argument by whoever must trust it, and its
batched fast path (entries, read-ahead, tile-at-a-time tree) is kept beside the checks it feeds.

One pass over the sequenced events in log order, O(log n) memory:

1. every log index from 0 is there once (a gap is a deleted event);
2. events from the hash chain that preceded the log still chain (``prev_hash``, ``hash``, the frozen head);
3. each event's leaf hash is recomputed from its columns and compared with the stored level-0 tile, and every
   tile of every level with what the recomputed tree says (so proofs served from tiles are right);
4. at the size of every stored checkpoint, its signature (the log's current or retired keys) and its root are
   checked against the recomputed tree; so is every checkpoint held by a witness outside the database — a
   witness checkpoint larger than the log means the log was cut back;
5. successive stored checkpoints are checked with an RFC 9162 consistency proof read from the tiles;
6. the append-only triggers are in place.

It stops at the first disagreement and names it: the event (id and log index) or the checkpoint.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db import connections
from django.db.models import Max

from portal.audit import GENESIS_HASH
from portal.models import AuditEvent, AuditHead, LogCheckpoint, LogTile, LogWitnessReceipt
from portal.tlog import merkle
from portal.tlog.entries import INDEX as _INDEX
from portal.tlog.entries import iter_rows, rows_entries
from portal.tlog.guard import missing_triggers
from portal.tlog.keys import log_verifiers
from portal.tlog.note import NoteError, open_checkpoint
from portal.tlog.tiles import HASH, TILE_HEIGHT, TILE_WIDTH, TileSet, read_tiles, tiles_for_nodes
from portal.tlog.witness import DirectoryWitness, configured_witnesses


@dataclass(frozen=True)
class LogProblem:
    """The first thing that does not verify. ``event_id``/``log_index`` name the event when there is one."""

    subject: str
    problem: str
    event_id: int | None = None
    log_index: int | None = None
    tree_size: int | None = None

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


@dataclass
class VerifyReport:
    events_verified: int = 0
    chained_events: int = 0
    checkpoints_verified: int = 0
    witnessed_verified: int = 0
    witnesses: list[str] = field(default_factory=list)
    unsealed: int = 0
    tree_size: int = 0
    problem: LogProblem | None = None


class _Stop(Exception):
    def __init__(self, problem: LogProblem) -> None:
        self.problem = problem


@dataclass(frozen=True)
class _Expected:
    size: int
    root: bytes
    label: str
    witnessed: bool = False


def _event(index: int, ids: dict[int, int]) -> str:
    event_id = ids.get(index)
    return f"event #{event_id} (log index {index})" if event_id is not None else f"log index {index}"


def verify_log(
    *, witness_paths: list[str] | None = None, batch_size: int = 20_000, check_consistency: bool = True
) -> VerifyReport:
    """Verify everything (see the module docstring). ``witness_paths``: directories of witnessed checkpoints
    to compare with; None means the configured directory witnesses."""
    report = VerifyReport()
    try:
        _verify(report, witness_paths, batch_size, check_consistency)
    except _Stop as stop:
        report.problem = stop.problem
    report.unsealed = AuditEvent.objects.filter(log_index__isnull=True).count()
    return report


def _verify(report: VerifyReport, witness_paths, batch_size: int, check_consistency: bool) -> None:
    missing = missing_triggers()
    if missing:
        names = ", ".join(f"{name} on {table}" for table, name in sorted(missing))
        raise _Stop(LogProblem("database", f"append-only triggers are missing or disabled: {names}"))
    verifiers = log_verifiers()
    # Every tree size something signed: the stored checkpoints (checked one by one as the tree reaches them)
    # and the witnessed ones, merged in size order.
    expected = heapq.merge(_stored_checkpoints(verifiers), _witnessed(report, witness_paths, verifiers), key=_size)
    upcoming = next(expected, None)
    tree = _Tree()
    chain = _LegacyChain()
    previous_match = 0
    vendor = connections["default"].vendor
    sha256 = hashlib.sha256
    for batch in iter_rows(batch_size=batch_size, prefetch=True):
        rows, gap = batch, None
        if batch[0][_INDEX] != tree.size or batch[-1][_INDEX] - batch[0][_INDEX] != len(batch) - 1:
            k = next(i for i, row in enumerate(batch) if row[_INDEX] != tree.size + i)
            rows, gap = batch[:k], batch[k][_INDEX]  # the events before the gap are verified first
        entries = rows_entries(rows, vendor)
        if chain.open:
            for row, entry in zip(rows, entries, strict=True):
                chain.check(row[0], row[_INDEX], row[13], row[14], entry)
        else:
            for row in rows:
                if row[13] or row[14]:
                    chain.check(row[0], row[_INDEX], row[13], row[14], b"")
        leaves = [sha256(b"\x00" + entry).digest() for entry in entries]
        at = 0
        while at < len(leaves):
            # grow the tree to the next signed size within this batch (or to the batch's end), then compare
            stop = len(leaves) if upcoming is None else min(len(leaves), upcoming.size - tree.size + at)
            tree.extend(leaves[at:stop])
            at = stop
            while upcoming is not None and upcoming.size == tree.size:
                _compare(upcoming, tree, previous_match)
                if upcoming.witnessed:
                    report.witnessed_verified += 1
                else:
                    report.checkpoints_verified += 1
                    previous_match = tree.size
                upcoming = next(expected, None)
        if gap is not None:
            raise _Stop(
                LogProblem(
                    f"log index {tree.size}",
                    f"is missing (the next one is {gap}): an event was deleted from the log",
                    log_index=tree.size,
                )
            )
    report.tree_size = report.events_verified = tree.size
    report.chained_events = chain.count
    if upcoming is not None:
        if upcoming.witnessed:
            raise _Stop(
                LogProblem(
                    upcoming.label,
                    f"was witnessed at tree size {upcoming.size} but the log now has only "
                    f"{tree.size} events: the log was cut back",
                    tree_size=upcoming.size,
                )
            )
        raise _Stop(
            LogProblem(
                upcoming.label,
                f"signs a tree of {upcoming.size} events but the log has {tree.size}: events were removed",
                tree_size=upcoming.size,
            )
        )
    last = LogCheckpoint.objects.aggregate(size=Max("tree_size"))["size"] or 0
    if last != tree.size:
        raise _Stop(
            LogProblem(
                f"log index {last}",
                f"events are sequenced up to {tree.size} but the last checkpoint has size {last}",
                log_index=last,
            )
        )
    tree.finish()
    chain.finish()
    if check_consistency:
        _check_consistency(batch_size)


def _size(expected: _Expected) -> int:
    return expected.size


def _event_ids(indexes: list[int]) -> dict[int, int]:
    rows = AuditEvent.objects.filter(log_index__in=indexes).values_list("log_index", "id")
    return {index: pk for index, pk in rows if index is not None}


def _compare(expected: _Expected, tree: _Tree, previous_match: int) -> None:
    if expected.root == tree.root():
        return
    size = tree.size
    tree.check_partial()  # an event whose stored leaf hash still tells the truth is named exactly
    first, last = previous_match, size - 1
    ids = _event_ids([first, last])
    where = (
        f"{_event(first, ids)}"
        if first == last
        else f"one of log indexes {first}–{last} ({_event(first, ids)} to {_event(last, ids)})"
    )
    raise _Stop(
        LogProblem(
            expected.label,
            f"its signed root does not match the events: the log was rewritten; the change is at {where}",
            tree_size=size,
            log_index=first if first == last else None,
            event_id=ids.get(first) if first == last else None,
        )
    )


def _stored_checkpoints(verifiers) -> Iterator[_Expected]:
    previous = 0
    for stored in LogCheckpoint.objects.order_by("tree_size").iterator(chunk_size=2000):
        label = f"checkpoint {stored.tree_size}"
        try:
            parsed, _ = open_checkpoint(stored.note, verifiers)
        except NoteError as exc:
            raise _Stop(
                LogProblem(
                    label, f"its signature does not verify with the log's keys: {exc}", tree_size=stored.tree_size
                )
            )
        if parsed.size != stored.tree_size or parsed.root.hex() != stored.root_hash:
            raise _Stop(LogProblem(label, "its row does not match its signed note", tree_size=stored.tree_size))
        if parsed.size <= previous:
            raise _Stop(LogProblem(label, "tree sizes of checkpoints must grow", tree_size=stored.tree_size))
        previous = parsed.size
        yield _Expected(parsed.size, parsed.root, label)


def _witnessed(report: VerifyReport, witness_paths, verifiers) -> list[_Expected]:
    if witness_paths is None:
        witnesses = [w for w in configured_witnesses() if isinstance(w, DirectoryWitness)]
        for w in witnesses:
            if not w.path.is_dir() and LogWitnessReceipt.objects.filter(witness=w.name).exists():
                raise _Stop(LogProblem(f"witness {w.path}", "received checkpoints but its directory is gone"))
        witnesses = [w for w in witnesses if w.path.is_dir()]
    else:
        witnesses = [DirectoryWitness(p) for p in witness_paths]
    by_size: dict[int, _Expected] = {}
    for witness in witnesses:
        report.witnesses.append(str(witness.path))
        try:
            records = list(witness.checkpoints())
        except OSError as exc:
            raise _Stop(LogProblem(f"witness {witness.path}", f"cannot be read: {exc}"))
        for record in records:
            label = f"witnessed checkpoint ({witness.path}/{record.source})"
            try:
                parsed, _ = open_checkpoint(record.note, verifiers)
            except NoteError as exc:
                raise _Stop(LogProblem(label, f"is not a checkpoint signed by the log's keys: {exc}"))
            known = by_size.get(parsed.size)
            if known is not None and known.root != parsed.root:
                raise _Stop(
                    LogProblem(
                        label,
                        f"and {known.label} sign different trees of size {parsed.size}: the log forked",
                        tree_size=parsed.size,
                    )
                )
            by_size[parsed.size] = _Expected(parsed.size, parsed.root, label, witnessed=True)
    return sorted(by_size.values(), key=lambda e: e.size)


class _LegacyChain:
    """The hash chain events were written with before the log: it must still hold for them."""

    def __init__(self) -> None:
        self.count = 0
        self.prev_hash = GENESIS_HASH
        self.last_id = 0
        self.ended = False

    @property
    def open(self) -> bool:
        """Still inside the chain: every event is checked against it (afterwards only those claiming a part)."""
        return not self.ended

    def check(self, event_id: int, index: int, prev_hash: str, chain_hash: str | None, entry: bytes) -> None:
        where = f"event #{event_id} (log index {index})"
        if not prev_hash:
            self.ended = True
            if chain_hash:
                raise _Stop(LogProblem(where, "has a chain hash but no previous hash (row altered)", event_id, index))
            return
        if self.ended:
            raise _Stop(LogProblem(where, "carries a chain hash after the chain ended", event_id, index))
        if self.last_id and event_id != self.last_id + 1:
            raise _Stop(
                LogProblem(where, f"the chain skips from event #{self.last_id}: an event is missing", event_id, index)
            )
        if prev_hash != self.prev_hash:
            raise _Stop(LogProblem(where, "prev_hash does not match the previous event's hash", event_id, index))
        if hashlib.sha256(entry).hexdigest() != chain_hash:
            raise _Stop(LogProblem(where, "content does not match its chain hash (row altered)", event_id, index))
        self.prev_hash, self.last_id = chain_hash, event_id
        self.count += 1

    def finish(self) -> None:
        head = AuditHead.objects.filter(id=1).first()
        if head is None or head.last_event_id == 0:
            return
        if head.last_event_id != self.last_id or head.last_hash != self.prev_hash:
            raise _Stop(
                LogProblem(
                    f"chain head (event #{head.last_event_id})",
                    "does not match the last chained "
                    f"event in the log (#{self.last_id}): events were removed from the old chain",
                    event_id=head.last_event_id,
                )
            )


class _StoredTiles:
    """Stored tiles of one level at a time, read 64 to a query as the recomputed tree reaches them."""

    def __init__(self) -> None:
        self.cache: dict[int, dict[int, bytes]] = {}

    def get(self, level: int, index: int) -> bytes | None:
        cache = self.cache.setdefault(level, {})
        if index not in cache:
            cache.clear()
            with connections["default"].cursor() as cursor:
                cursor.execute(_TILES_SQL, [level, index, index + 64])
                cache.update((i, bytes(h)) for i, h in cursor.fetchall())
            if index not in cache:
                return None
        return cache[index]


_TILES_SQL = (
    f"SELECT tile_index, hashes FROM {LogTile._meta.db_table} "  # noqa: S608
    "WHERE level = %s AND tile_index >= %s AND tile_index < %s"
)


class _Tree:
    """The tree recomputed from the leaves, built level by level a tile at a time, each tile compared with the
    stored one as it fills (so proofs served from tiles are right), and its root at any size in O(log n).

    For each tile level T, ``rows[T][j]`` holds the hashes at height ``8 * T + j`` inside the tile being filled:
    row 0 is the tile's content; rows 1-7 the complete nodes above it so far. Hashing is done a row at a time in
    list comprehensions — one SHA-256 per node, no function call per node.
    """

    def __init__(self) -> None:
        self.size = 0
        self.rows: list[list[list[bytes]]] = []
        self.index: list[int] = []
        self.stored = _StoredTiles()

    def extend(self, leaves: list[bytes]) -> None:
        self._push(0, leaves)
        self.size += len(leaves)

    def _push(self, level: int, hashes: list[bytes]) -> None:
        sha256 = hashlib.sha256
        while hashes:
            if level == len(self.rows):
                self.rows.append([[] for _ in range(TILE_HEIGHT)])
                self.index.append(0)
            rows = self.rows[level]
            bottom = rows[0]
            room = TILE_WIDTH - len(bottom)
            bottom.extend(hashes[:room])
            hashes = hashes[room:]
            below = bottom
            for row in rows[1:]:
                done, complete = len(row), len(below) >> 1
                if complete > done:
                    lefts, rights = below[2 * done : 2 * complete : 2], below[2 * done + 1 : 2 * complete : 2]
                    row.extend([sha256(b"\x01" + a + b).digest() for a, b in zip(lefts, rights, strict=True)])
                below = row
            if len(bottom) == TILE_WIDTH:
                root = sha256(b"\x01" + below[0] + below[1]).digest()
                self._compare(level, self.index[level], b"".join(bottom))
                for row in rows:
                    row.clear()
                self.index[level] += 1
                self._push(level + 1, [root])

    def root(self) -> bytes:
        """RFC 9162 root of the tree of ``size`` leaves: the complete subtrees, largest first, folded."""
        if not self.size:
            return merkle.EMPTY_ROOT
        nodes = []
        for rows in reversed(self.rows):
            width, offset = len(rows[0]), 0
            for height in range(TILE_HEIGHT - 1, -1, -1):
                if width >> height & 1:
                    nodes.append(rows[height][offset >> height])
                    offset += 1 << height
        root = nodes[-1]
        for left in reversed(nodes[:-1]):
            root = merkle.node_hash(left, root)
        return root

    def check_partial(self) -> None:
        """Compare the leaves of the level-0 tile being filled with the stored ones (full tiles are compared
        as they fill)."""
        if self.rows and self.rows[0][0]:
            index = self.index[0]
            computed = b"".join(self.rows[0][0])
            stored = self.stored.get(0, index) or b""
            if stored[: len(computed)] != computed:
                self._compare(0, index, computed)

    def finish(self) -> None:
        """Compare the partial tiles of the final tree (the right edge)."""
        for level, rows in enumerate(self.rows):
            if rows[0]:
                self._compare(level, self.index[level], b"".join(rows[0]))

    def _compare(self, level: int, index: int, computed: bytes) -> None:
        stored = self.stored.get(level, index)
        label = f"tile {level}/{index}"
        if stored is None:
            raise _Stop(LogProblem(label, "is missing from storage"))
        if stored == computed:
            return
        if level == 0:
            for i in range(0, min(len(stored), len(computed)), HASH):
                if stored[i : i + HASH] != computed[i : i + HASH]:
                    log_index = index * TILE_WIDTH + i // HASH
                    event = AuditEvent.objects.filter(log_index=log_index).values_list("id", flat=True).first()
                    raise _Stop(
                        LogProblem(
                            f"event #{event} (log index {log_index})",
                            "its content does not match the leaf hash stored for it (row altered)",
                            event,
                            log_index,
                        )
                    )
        raise _Stop(
            LogProblem(
                label,
                f"does not match the tree recomputed from the events ({len(stored) // HASH} "
                f"hashes stored, {len(computed) // HASH} expected)",
            )
        )


def _check_consistency(batch_size: int) -> None:
    """RFC 9162 consistency proofs between successive stored checkpoints, read from the tiles."""
    cache = TileSet()
    previous = None
    for size, root_hex in (
        LogCheckpoint.objects.order_by("tree_size")
        .values_list("tree_size", "root_hash")
        .iterator(chunk_size=batch_size)
    ):
        root = bytes.fromhex(root_hex)
        if previous is not None:
            ranges = merkle.consistency_ranges(previous[0], size)
            needed = tiles_for_nodes(merkle.ranges_nodes(ranges)) - set(cache.tiles)
            if needed:
                if len(cache.tiles) > 4096:
                    cache.tiles.clear()
                cache.tiles.update(read_tiles(needed).tiles)
            try:
                proof = [merkle.range_hash(lo, hi, cache.node) for lo, hi in ranges]
                merkle.verify_consistency(previous[0], size, previous[1], root, proof)
            except (merkle.ProofError, LookupError) as exc:
                raise _Stop(
                    LogProblem(
                        f"checkpoint {size}", f"is not consistent with checkpoint {previous[0]}: {exc}", tree_size=size
                    )
                )
        previous = (size, root)
