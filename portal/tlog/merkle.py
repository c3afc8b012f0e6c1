"""RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs, and their verification.

Pure functions over a *node getter* — ``get(level, index)`` returns the hash of the complete subtree of
``2**level`` leaves starting at leaf ``index << level`` — so the same code proves from in-memory hashes
(tests, the sequencer) and from stored tiles (:mod:`portal.tlog.tiles`). Every range the RFC's recursion
touches decomposes into at most ``2 * log2(n)`` complete subtrees, so a proof needs O(log n) node reads.

Checked against the RFC 6962/9162 reference vectors (transparency-dev/merkle) in tests/portal/test_tlog_merkle.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
NodeGetter = Callable[[int, int], bytes]

_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof that does not verify, or arguments no proof can exist for."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 9162 splits a range of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree whose ``len(hashes)`` (a power of two) bottom hashes are given."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def subtree_nodes(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The complete subtrees (level, index) that cover leaves [lo, hi), largest first, left to right."""
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        yield level, lo >> level
        lo += 1 << level


def range_hash(lo: int, hi: int, get: NodeGetter) -> bytes:
    """MTH(D[lo:hi]) for the ranges RFC 9162 proofs use (``lo`` aligned to the range's size, rounded up)."""
    if lo >= hi:
        raise ProofError(f"empty range [{lo}, {hi})")
    nodes = [get(level, index) for level, index in subtree_nodes(lo, hi)]
    root = nodes[-1]
    for left in reversed(nodes[:-1]):
        root = node_hash(left, root)
    return root


def root(size: int, get: NodeGetter) -> bytes:
    return EMPTY_ROOT if size == 0 else range_hash(0, size, get)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf side first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    path = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1)."""
    if not 0 <= size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 in (0, size2):
        return []
    path = []
    lo, hi, m, whole = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                path.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    path.reverse()
    return path


def ranges_nodes(ranges: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """Every (level, index) node the given ranges' hashes are computed from."""
    return {node for lo, hi in ranges for node in subtree_nodes(lo, hi)}


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    return [range_hash(lo, hi, get) for lo, hi in inclusion_ranges(index, size)]


def consistency_proof(size1: int, size2: int, get: NodeGetter) -> list[bytes]:
    return [range_hash(lo, hi, get) for lo, hi in consistency_ranges(size1, size2)]


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root that ``proof`` proves ``leaf`` (a leaf hash) at ``index`` into."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("hashes must be 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> None:
    if root_from_inclusion_proof(index, size, leaf, proof) != root_hash:
        raise ProofError(f"leaf {index} is not included in the tree of size {size} with that root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless ``proof`` shows tree (size1, root1) is a prefix of (size2, root2)."""
    if size1 > size2:
        raise ProofError(f"tree size went backwards ({size1} to {size2})")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("hashes must be 32 bytes")
    if size1 == size2:
        if proof or root1 != root2:
            raise ProofError("equal sizes need equal roots and an empty proof")
        return
    if size1 == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != root1 or sr != root2:
        raise ProofError(f"tree {size1} is not a prefix of tree {size2} with those roots")


class CompactTree:
    """The roots of the complete subtrees covering leaves [0, size): enough to append and to hash the tree.

    What a verifier keeps while it streams a log (O(log n) memory), and how the sequencer would grow a tree
    without storage. ``hashes`` are largest subtree first.
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of size {size} has {bin(size).count('1')} subtree roots, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Append a leaf hash."""
        hashes = self.hashes
        hashes.append(leaf)
        n = self.size
        while n & 1:
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            n >>= 1
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            r = node_hash(left, r)
        return r
