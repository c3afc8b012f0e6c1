"""Verify the audit log from the events up (``manage.py verify_audit``).

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
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import Max

from portal.audit import GENESIS_HASH
from portal.models import AuditEvent, AuditHead, LogCheckpoint, LogTile, LogWitnessReceipt
from portal.tlog import merkle
from portal.tlog.entries import iter_entries
from portal.tlog.guard import missing_triggers
from portal.tlog.keys import log_verifiers
from portal.tlog.note import NoteError, open_checkpoint
from portal.tlog.tiles import HASH, TILE_WIDTH, TileSet, read_tiles, tiles_for_nodes
from portal.tlog.witness import DirectoryWitness, configured_witnesses

TILE_BYTES = TILE_WIDTH * HASH


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


def _event(index: int, ids: dict[int, int]) -> str:
    event_id = ids.get(index)
    return f"event #{event_id} (log index {index})" if event_id is not None else f"log index {index}"


def verify_log(
    *, witness_paths: list[str] | None = None, batch_size: int = 5000, check_consistency: bool = True
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
    witnessed = _witnessed(report, witness_paths, verifiers)
    stored = _stored_checkpoints(verifiers)
    next_stored = next(stored, None)
    w = 0

    tree = merkle.CompactTree()
    tiles = _TileChecker()
    chain = _LegacyChain()
    recent_ids: dict[int, int] = {}
    previous_match = 0
    for index, event_id, prev_hash, chain_hash, entry in iter_entries(batch_size=batch_size):
        if index != tree.size:
            raise _Stop(
                LogProblem(
                    f"log index {tree.size}",
                    f"is missing (the next one is {index}): an event was deleted from the log",
                    log_index=tree.size,
                )
            )
        recent_ids[index] = event_id
        if len(recent_ids) > 2 * batch_size:
            for old in [k for k in recent_ids if k < index - batch_size]:
                del recent_ids[old]
        chain.check(event_id, index, prev_hash, chain_hash, entry)
        leaf = merkle.leaf_hash(entry)
        tiles.add(index, event_id, leaf)
        tree.append(leaf)
        size = tree.size
        while next_stored is not None and next_stored.size == size:
            _compare(next_stored, tree.root(), previous_match, size, recent_ids, tiles)
            report.checkpoints_verified += 1
            previous_match = size
            next_stored = next(stored, None)
        while w < len(witnessed) and witnessed[w].size == size:
            _compare(witnessed[w], tree.root(), previous_match, size, recent_ids, tiles)
            report.witnessed_verified += 1
            w += 1
    report.tree_size = report.events_verified = tree.size
    report.chained_events = chain.count
    if next_stored is not None:
        raise _Stop(
            LogProblem(
                next_stored.label,
                f"signs a tree of {next_stored.size} events but the log has {tree.size}: events were removed",
                tree_size=next_stored.size,
            )
        )
    if w < len(witnessed):
        cut = witnessed[w]
        raise _Stop(
            LogProblem(
                cut.label,
                f"was witnessed at tree size {cut.size} but the log now has only "
                f"{tree.size} events: the log was cut back",
                tree_size=cut.size,
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
    tiles.finish(tree.size)
    chain.finish()
    if check_consistency:
        _check_consistency(batch_size)


def _compare(
    expected: _Expected, root: bytes, previous_match: int, size: int, ids: dict[int, int], tiles: _TileChecker
) -> None:
    if expected.root == root:
        return
    tiles.check_partial(size)  # an event whose stored leaf hash still tells the truth is named exactly
    first, last = previous_match, size - 1
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
            by_size[parsed.size] = _Expected(parsed.size, parsed.root, label)
    return sorted(by_size.values(), key=lambda e: e.size)


class _LegacyChain:
    """The hash chain events were written with before the log: it must still hold for them."""

    def __init__(self) -> None:
        self.count = 0
        self.prev_hash = GENESIS_HASH
        self.last_id = 0
        self.ended = False

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


class _TileChecker:
    """Rebuilds every tile from the recomputed leaves and compares it with the stored one."""

    def __init__(self) -> None:
        self.buffers: list[bytearray] = []
        self.stored: dict[int, dict[int, bytes]] = {}
        self.first_ids: dict[int, int] = {}

    def add(self, index: int, event_id: int, leaf: bytes) -> None:
        if index % TILE_WIDTH == 0:
            self.first_ids = {index: event_id}
        level, value, count = 0, leaf, index
        while True:
            if len(self.buffers) <= level:
                self.buffers.append(bytearray())
            buffer = self.buffers[level]
            buffer += value
            if len(buffer) < TILE_BYTES:
                return
            self._compare(level, count // TILE_WIDTH, bytes(buffer), index, event_id)
            value = merkle.perfect_root([bytes(buffer[i : i + HASH]) for i in range(0, TILE_BYTES, HASH)])
            buffer.clear()
            level, count = level + 1, count // TILE_WIDTH

    def check_partial(self, size: int) -> None:
        """Compare the leaves of the level-0 tile being filled with the stored ones (full tiles are compared
        as they fill)."""
        if size % TILE_WIDTH and self.buffers:
            index = size // TILE_WIDTH
            stored = self._stored_tile(0, index) or b""
            computed = bytes(self.buffers[0])
            if stored[: len(computed)] != computed:
                self._compare(0, index, computed, size - 1, None)

    def finish(self, size: int) -> None:
        count, level = size, 0
        while count:
            width = count % TILE_WIDTH
            if width:
                self._compare(level, count // TILE_WIDTH, bytes(self.buffers[level]), size - 1, None)
            count //= TILE_WIDTH
            level += 1

    def _stored_tile(self, level: int, index: int) -> bytes | None:
        cache = self.stored.setdefault(level, {})
        if index not in cache:
            cache.clear()
            rows = LogTile.objects.filter(level=level, tile_index__gte=index, tile_index__lt=index + 64).values_list(
                "tile_index", "hashes"
            )
            cache.update({i: bytes(h) for i, h in rows})
            if index not in cache:
                return None
        return cache[index]

    def _compare(self, level: int, index: int, computed: bytes, last_index: int, event_id: int | None) -> None:
        stored = self._stored_tile(level, index)
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
