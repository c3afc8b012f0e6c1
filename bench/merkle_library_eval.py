"""Why Registrar has its own RFC 9162 code: pymerkle checked against the RFC 6962/9162 reference vectors.

    python3 -m venv /tmp/pm && /tmp/pm/bin/pip install pymerkle==7.0.0 && /tmp/pm/bin/python bench/merkle_library_eval.py

Not a dependency of Registrar (run it in a throw-away virtualenv). Prints, for the reference tree of 8 leaves
(transparency-dev/merkle proof/verify_test.go): whether pymerkle's roots, inclusion paths and consistency
paths equal the RFC 9162 ones, and how long its proofs take at 100,000 leaves. Findings: docs/audit-log.md.
"""

from __future__ import annotations

import tempfile
import time

from pymerkle import InmemoryTree, SqliteTree

LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
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
]
CONSISTENCY = [
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
]


def hexes(path) -> list[str]:
    return [h.hex() if isinstance(h, bytes) else h for h in path]


def main() -> None:
    tree = InmemoryTree(algorithm="sha256")
    for leaf in LEAVES:
        tree.append_entry(leaf)
    roots = [tree.get_root(n).hex() for n in range(1, 9)]
    print(f"roots 1..8 match RFC 9162: {roots == ROOTS}")
    for index, size, want in INCLUSION:
        got = hexes(tree.prove_inclusion(index + 1, size).path)  # pymerkle numbers leaves from 1
        print(f"inclusion {index}/{size}: RFC path {got == want}; without its first element {got[1:] == want}")
    for size1, size2, want in CONSISTENCY:
        got = hexes(tree.prove_consistency(size1, size2).path)
        print(f"consistency {size1}->{size2}: RFC path {got == want} ({len(got)} hashes, RFC {len(want)})")
    # Its persistent backend (SQLite): a proof in a fresh process recomputes subtree hashes from the leaves.
    with tempfile.TemporaryDirectory() as tmp:
        SqliteTree(f"{tmp}/tree.db", algorithm="sha256").append_entries([i.to_bytes(8, "big") for i in range(200_000)])
        fresh = SqliteTree(f"{tmp}/tree.db", algorithm="sha256")
        began = time.perf_counter()
        fresh.prove_inclusion(100_001, 200_000)
        print(f"SqliteTree, first inclusion proof at 200,000 leaves: {(time.perf_counter() - began) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
