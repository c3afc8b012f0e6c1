"""RFC 9162 hashing and proofs, checked against the reference vectors, and proofs read from tiles checked
against a naive implementation of the RFC's definitions at every shape of tree."""

from __future__ import annotations

import hashlib
import random

import pytest

from portal.tlog import merkle
from portal.tlog.sequencer import append_leaves
from portal.tlog.tiles import TileSet, format_index, parse_tile_path, right_edge, tile_path

# RFC 6962 / RFC 9162 reference vectors, as published with transparency-dev/merkle (proof/verify_test.go).
LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
INCLUSION = [  # (leaf index, tree size, proof)
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [  # (size 1, size 2, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _getter(leaf_hashes):
    def get(level, index):
        return merkle.perfect_root(leaf_hashes[index << level : (index + 1) << level])

    return get


def _naive_root(hashes):
    """MTH(D[n]) exactly as RFC 9162 §2.1.1 defines it."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return merkle.node_hash(_naive_root(hashes[:k]), _naive_root(hashes[k:]))


def _naive_path(m, hashes):
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    if len(hashes) == 1:
        return []
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    if m < k:
        return _naive_path(m, hashes[:k]) + [_naive_root(hashes[k:])]
    return _naive_path(m - k, hashes[k:]) + [_naive_root(hashes[:k])]


def _naive_subproof(m, hashes, whole):
    """SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1."""
    n = len(hashes)
    if m == n:
        return [] if whole else [_naive_root(hashes)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _naive_subproof(m, hashes[:k], whole) + [_naive_root(hashes[k:])]
    return _naive_subproof(m - k, hashes[k:], False) + [_naive_root(hashes[:k])]


LEAF_HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def test_roots_match_the_reference_vectors():
    assert merkle.root(0, _getter([])) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()
    for size in range(1, 9):
        assert merkle.root(size, _getter(LEAF_HASHES)) == ROOTS[size - 1]
        tree = merkle.CompactTree()
        for leaf in LEAF_HASHES[:size]:
            tree.append(leaf)
        assert tree.root() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_reference_vectors_and_corruptions_fail(index, size, proof):
    proof = [bytes.fromhex(p) for p in proof]
    assert merkle.inclusion_proof(index, size, _getter(LEAF_HASHES)) == proof
    leaf, root = LEAF_HASHES[index], ROOTS[size - 1]
    merkle.verify_inclusion(index, size, leaf, proof, root)
    corrupt = [
        (index - 1, size, leaf, proof, root),
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size // 2, leaf, proof, root),
        (index, size, merkle.leaf_hash(b"WrongLeaf"), proof, root),
        (index, size, leaf, proof, merkle.EMPTY_ROOT),
        (index, size, leaf, proof, SOME_HASH),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [root, *proof], root),
        (index, size, leaf, proof[:-1], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        corrupt.append((index, size, leaf, flipped, root))
    for args in corrupt:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_reference_vectors_and_corruptions_fail(size1, size2, proof):
    proof = [bytes.fromhex(p) for p in proof]
    assert merkle.consistency_proof(size1, size2, _getter(LEAF_HASHES)) == proof
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    merkle.verify_consistency(size1, size2, root1, root2, proof)
    if not proof:
        return
    corrupt = [
        (size1 - 1, size2, root1, root2, proof),
        (size1 + 1, size2, root1, root2, proof),
        (size1 ^ 2, size2, root1, root2, proof),
        (size1, size2 * 2, root1, root2, proof),
        (size1, size2 // 2, root1, root2, proof),
        (size1, size2, SOME_HASH, root2, proof),
        (size1, size2, root1, SOME_HASH, proof),
        (size1, size2, root2, root1, proof),
        (size1, size2, root1, root2, []),
        (size1, size2, root1, root2, [*proof, root1]),
        (size1, size2, root1, root2, [root2, *proof]),
        (size1, size2, root1, root2, [proof[0], *proof]),
        (size1, size2, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        corrupt.append((size1, size2, root1, root2, flipped))
    for args in corrupt:
        if args[0] == args[1] == 0 or (args[0] == 0 and not args[4]):
            continue  # trivially consistent, as RFC 9162 defines
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)


def test_edge_cases_of_consistency():
    merkle.verify_consistency(0, 0, SOME_HASH, SOME_HASH, [])
    merkle.verify_consistency(0, 5, SOME_HASH, ROOTS[4], [])
    for args in [
        (1, 0, ROOTS[0], ROOTS[0], []),
        (1, 1, ROOTS[0], ROOTS[1], []),
        (1, 1, ROOTS[0], ROOTS[0], [merkle.EMPTY_ROOT]),
    ]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)


def test_tiles_answer_every_proof_like_the_rfc_definitions():
    """Tiles of height 8 hold the tree; across sizes that cross tile and level boundaries, every proof read
    from them equals the RFC's recursive definition."""
    rng = random.Random(9162)
    leaves = [merkle.leaf_hash(rng.randbytes(12)) for i in range(70_000)]
    tiles = TileSet()
    append_leaves(tiles, 0, leaves)
    assert {k: len(v) // 32 for k, v in tiles.tiles.items() if len(v) < 256 * 32} == right_edge(70_000)
    for size in (1, 2, 3, 255, 256, 257, 511, 512, 513, 65_535, 65_536, 65_537, 70_000):
        hashes = leaves[:size]
        assert merkle.root(size, tiles.node) == _naive_root(hashes)
        for index in {0, size - 1, rng.randrange(size), size // 2}:
            assert merkle.inclusion_proof(index, size, tiles.node) == _naive_path(index, hashes)
        for old in {1, size // 3 or 1, size - 1 or 1, 256}:
            if old <= size:
                assert merkle.consistency_proof(old, size, tiles.node) == _naive_subproof(old, hashes, True)


def test_appending_in_batches_builds_the_same_tiles():
    leaves = [merkle.leaf_hash(bytes([i % 256, i // 256])) for i in range(1_000)]
    whole, batched = TileSet(), TileSet()
    append_leaves(whole, 0, leaves)
    size = 0
    for batch in (leaves[:1], leaves[1:256], leaves[256:257], leaves[257:900], leaves[900:]):
        append_leaves(batched, size, batch)
        size += len(batch)
    assert {k: bytes(v) for k, v in whole.tiles.items()} == {k: bytes(v) for k, v in batched.tiles.items()}


def test_tile_paths_follow_the_spec():
    assert format_index(1234067) == "x001/x234/067" and format_index(0) == "000" and format_index(1000) == "x001/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067" and tile_path(2, 5, 17) == "tile/2/005.p/17"
    assert tile_path("entries", 3) == "tile/entries/003"
    assert parse_tile_path("0/x001/x234/067") == (0, 1234067, 256)
    assert parse_tile_path("entries/005.p/9") == ("entries", 5, 9)
    for bad in ("0/x000/001", "0/1", "64/000", "0/000.p/0", "0/000.p/256", "01/000", "0/000.p/07", "x/000"):
        assert parse_tile_path(bad) is None, bad
    # the spec's example: a tree of 70,000 leaves
    assert right_edge(70_000) == {(0, 273): 112, (1, 1): 17, (2, 0): 1}
    assert right_edge(256) == {(1, 0): 1}
