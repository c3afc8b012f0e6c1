"""The Merkle tree stored as tiles (c2sp.org/tlog-tiles), and proofs read from them.

Tile ``(L, N)`` holds the hashes at tree height ``8 * L`` numbered ``N * 256`` to ``N * 256 + 255``: leaf
hashes at level 0, and at level L the roots of the full tiles of level L - 1. Any complete subtree's hash is
then one tile read plus at most 127 hash operations, so an inclusion or consistency proof at any tree size
reads O(log n) tiles — and they are fetched in ONE query (:func:`read_tiles`).

A tile row grows while its level's right edge passes through it (a partial tile of width W is the first W
hashes of the row); the database lets a row only grow (migration ``audit_log_append_only``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.db import connections

from portal.models import LogTile
from portal.tlog import merkle

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
HASH = merkle.HASH_SIZE

TileKey = tuple[int, int]  # (tile level, tile index)


class MissingTile(LookupError):
    """A tile the tree of the requested size must have is absent (or too short): storage lost data."""


def node_tile(level: int, index: int) -> tuple[TileKey, int, int]:
    """Where the hash of node (level, index) comes from: (tile, first hash in it, number of hashes)."""
    tile_level, height = divmod(level, TILE_HEIGHT)
    first = index << height
    return (tile_level, first >> TILE_HEIGHT), first & (TILE_WIDTH - 1), 1 << height


def tiles_for_nodes(nodes: Iterable[tuple[int, int]]) -> set[TileKey]:
    return {node_tile(level, index)[0] for level, index in nodes}


def right_edge(size: int) -> dict[TileKey, int]:
    """The partial tiles of a tree of ``size`` leaves, with their widths (c2sp.org/tlog-tiles)."""
    edge = {}
    level, count = 0, size
    while count:
        width = count % TILE_WIDTH
        if width:
            edge[(level, count // TILE_WIDTH)] = width
        level, count = level + 1, count // TILE_WIDTH
    return edge


class TileSet:
    """Tiles in memory, answering node hashes (the ``get`` of :mod:`portal.tlog.merkle`)."""

    def __init__(self, tiles: dict[TileKey, bytes | bytearray] | None = None) -> None:
        self.tiles: dict[TileKey, bytes | bytearray] = tiles or {}

    def node(self, level: int, index: int) -> bytes:
        key, first, count = node_tile(level, index)
        tile = self.tiles.get(key)
        if tile is None or len(tile) < (first + count) * HASH:
            raise MissingTile(f"tile {key[0]}/{key[1]} lacks node {level}/{index}")
        hashes = tile[first * HASH : (first + count) * HASH]
        if count == 1:
            return bytes(hashes)
        return merkle.perfect_root([bytes(hashes[i : i + HASH]) for i in range(0, len(hashes), HASH)])


_TABLE = LogTile._meta.db_table


def read_tiles(keys: Iterable[TileKey], *, using: str = "default") -> TileSet:
    """The given tiles, in one query (written out: building the ORM's OR of pairs cost more than running it)."""
    keys = sorted(set(keys))
    if not keys:
        return TileSet()
    pairs = ", ".join(["(%s, %s)"] * len(keys))
    sql = f"SELECT level, tile_index, hashes FROM {_TABLE} WHERE (level, tile_index) IN ({pairs})"  # noqa: S608
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [v for key in keys for v in key])
        rows = cursor.fetchall()
    return TileSet({(level, index): bytes(hashes) for level, index, hashes in rows})


def proofs(
    indexes: Iterable[int], size: int, *, since: int | None = None, using: str = "default"
) -> tuple[dict[int, list[bytes]], list[bytes] | None]:
    """Inclusion proofs for the leaves ``indexes`` in the tree of ``size`` leaves and (``since``) a
    consistency proof from tree size ``since``: read from stored tiles in one query."""
    paths = {i: merkle.inclusion_ranges(i, size) for i in indexes}
    consistency = merkle.consistency_ranges(since, size) if since is not None else None
    ranges = [r for path in paths.values() for r in path] + (consistency or [])
    tiles = read_tiles(tiles_for_nodes(merkle.ranges_nodes(ranges)), using=using)

    def resolve(path):
        return [merkle.range_hash(lo, hi, tiles.node) for lo, hi in path]

    return {i: resolve(path) for i, path in paths.items()}, (resolve(consistency) if consistency is not None else None)


def tree_root(size: int, *, using: str = "default") -> bytes:
    """The root of the stored tree at ``size`` (its right edge: at most ~8 tiles)."""
    nodes = list(merkle.subtree_nodes(0, size))
    tiles = read_tiles(tiles_for_nodes(nodes), using=using)
    return merkle.root(size, tiles.node)


# --- tile paths (c2sp.org/tlog-tiles) -----------------------------------------------------------------

_PATH = re.compile(
    r"^(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]{0,2}))?$"
)


def format_index(index: int) -> str:
    """1234067 → ``x001/x234/067``."""
    groups = []
    while True:
        index, rest = divmod(index, 1000)
        groups.append(f"{rest:03d}")
        if not index:
            break
    return "/".join(f"x{g}" for g in reversed(groups[1:])) + ("/" if len(groups) > 1 else "") + groups[0]


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{format_index(index)}{suffix}"


def parse_tile_path(path: str) -> tuple[int | str, int, int] | None:
    """``<L>/<N>[.p/<W>]`` (after ``tile/``) → (level or "entries", index, width); None if malformed."""
    match = _PATH.match(path)
    if not match:
        return None
    parts = match["index"].split("/")
    if len(parts) > 1 and parts[0] == "x000":  # no leading zero groups: one canonical path per tile
        return None
    level: int | str = match["level"]
    if level != "entries":
        level = int(match["level"])
        if level > 63:
            return None
    width = int(match["width"]) if match["width"] else TILE_WIDTH
    if width > TILE_WIDTH - 1 and match["width"]:
        return None
    return level, int("".join(p.lstrip("x") for p in parts)), width


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Entries as a C2SP entry bundle: each one prefixed by its length as a big-endian uint16."""
    out = bytearray()
    for entry in entries:
        if len(entry) > 0xFFFF:
            raise ValueError(f"a log entry of {len(entry)} bytes does not fit an entry bundle (64 KiB at most)")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)
