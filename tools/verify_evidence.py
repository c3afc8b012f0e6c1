#!/usr/bin/env python3
"""Verify a Registrar evidence pack offline, with the audit log's public key. Needs only ``cryptography``.

    python tools/verify_evidence.py evidence-reg_….json --key 'registrar.example.com/audit-log+1a2b3c4d+AXSU…'
    python tools/verify_evidence.py pack.json --key-file log.pub

What it proves, for the pack's ``timeline``:

1. the pack's ``log.checkpoint`` is a C2SP checkpoint (c2sp.org/tlog-checkpoint) signed, as a C2SP signed
   note, by the key you gave — the log's key, obtained from Registrar's operators out of band, never from the
   pack;
2. each event's ``leaf`` (the exact bytes the log recorded) is included, at ``log_index``, in the Merkle tree
   (RFC 9162) whose root that checkpoint signs — ``inclusion_proof`` is its audit path;
3. every field the pack shows for the event (time, actor, action, object, before/after, reason, policy
   version, request id, the old chain hashes) is what that leaf says.

The other sections of the pack (the client as it is now, its owner, its approvals…) are Registrar's current
view, not covered by the log: the timeline events are the evidence for them. To know the checkpoint is the one
everybody else saw, compare it with your own copy of the log's checkpoints (a witness) — the consistency of
two checkpoints is what ``manage.py verify_audit --witness`` and log monitors check.

Exit status: 0 every event proven; 1 something does not verify (the first problem is printed); 2 nothing
failed but some events are not sealed in the log yet (so not proven).

This file is deliberately self-contained and independent of Registrar's own code: an auditor can read all of
what is checked here, and a bug in Registrar's implementation cannot hide in a shared one.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EM_DASH = "\u2014 "
TIMELINE_KEYS = {
    "id",
    "at",
    "actor",
    "action",
    "object",
    "before",
    "after",
    "reason",
    "policy_version",
    "request_id",
    "hash",
    "prev_hash",
    "log_index",
    "leaf",
    "inclusion_proof",
}


# What the checks above cover: the timeline's events, against the signed checkpoint in "log" (the schema name
# and the generation time are labels). Every other section is reported as not covered.
PROVEN_SECTIONS = {"schema", "generated_at", "timeline", "log", "log_witness"}


class Invalid(Exception):
    """The pack does not prove what it claims."""


# --- encodings --------------------------------------------------------------------------------------------


def b64decode(value, what: str) -> bytes:
    """Strict standard base64: the canonical encoding only (no stray bits, no whitespace)."""
    if not isinstance(value, str):
        raise Invalid(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise Invalid(f"{what} is not valid base64")
    if base64.b64encode(raw).decode() != value:
        raise Invalid(f"{what} is not canonical base64")
    return raw


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- RFC 9162 ----------------------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        raise Invalid(f"log index {index} is outside the tree of size {size}")
    if any(len(p) != 32 for p in proof):
        raise Invalid("proof hashes must be 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Invalid("inclusion proof is too long")
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
        raise Invalid("inclusion proof is too short")
    return r


# --- C2SP signed note, checkpoint ---------------------------------------------------------------------------


def parse_key(encoded: str) -> tuple[str, int, bytes]:
    """A signed-note verifier key ``<name>+<key id hex>+<base64(0x01 || Ed25519 public key)>``."""
    parts = encoded.strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or len(parts[1]) != 8:
        raise SystemExit("the key must look like <name>+<key id>+<base64 key> (REGISTRAR_LOG_VERIFIER_KEY)")
    name, key_id, blob = parts[0], int(parts[1], 16), base64.b64decode(parts[2])
    if len(blob) != 33 or blob[0] != 1:
        raise SystemExit("only Ed25519 verifier keys (algorithm 1) are supported")
    expected = int.from_bytes(hashlib.sha256(name.encode() + b"\n" + blob).digest()[:4], "big")
    if expected != key_id:
        raise SystemExit("the key id does not match the key: check the key you were given")
    return name, key_id, blob[1:]


def open_checkpoint(note: str, key: tuple[str, int, bytes]) -> tuple[str, int, bytes]:
    """Verify the note's signature by ``key`` and parse the checkpoint: (origin, size, root)."""
    name, key_id, public = key
    if not isinstance(note, str) or not note.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Invalid("the checkpoint is not a signed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise Invalid("the checkpoint has no signatures")
    text, signatures = note[: split + 1], note[split + 2 :].splitlines()
    signed = False
    for line in signatures:
        if not line.startswith(EM_DASH) or len(line[len(EM_DASH) :].split(" ")) != 2:
            raise Invalid("malformed signature line in the checkpoint")
        signer, blob = line[len(EM_DASH) :].split(" ")
        raw = b64decode(blob, "checkpoint signature")
        if len(raw) < 5:
            raise Invalid("checkpoint signature is too short")
        if signer != name or int.from_bytes(raw[:4], "big") != key_id:
            continue  # another key's signature (a witness, a rotated key): not ours to judge
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], text.encode())
        except InvalidSignature:
            raise Invalid(f"the checkpoint's signature by {name} does not verify: it was altered")
        signed = True
    if not signed:
        raise Invalid(f"the checkpoint is not signed by the key given ({name}+{key_id:08x})")
    lines = text.split("\n")
    if len(lines) < 4 or any(not line for line in lines[:-1]) or lines[-1]:
        raise Invalid("the checkpoint text is malformed")
    origin, size, root = lines[0], lines[1], b64decode(lines[2], "checkpoint root hash")
    if origin != name:
        raise Invalid(f"the checkpoint's origin {origin!r} is not the key's name {name!r}")
    if not size.isdigit() or (len(size) > 1 and size[0] == "0") or len(root) != 32:
        raise Invalid("the checkpoint text is malformed")
    return origin, int(size), root


# --- the pack ------------------------------------------------------------------------------------------------


def check_event(event: dict, tree_size: int, root: bytes) -> tuple[str, dict] | None:
    """None when the event is not sealed yet; else (description, leaf) once proven. Raises Invalid."""
    if not isinstance(event, dict) or set(event) != TIMELINE_KEYS:
        raise Invalid("a timeline entry has missing or unexpected fields")
    label = f"event #{event['id']}"
    if event["log_index"] is None and event["leaf"] is None and event["inclusion_proof"] is None:
        return None
    index, proof = event["log_index"], event["inclusion_proof"]
    if type(index) is not int or not isinstance(proof, list):
        raise Invalid(f"{label}: log_index or inclusion_proof is malformed")
    data = b64decode(event["leaf"], f"{label}: leaf")
    path = [b64decode(p, f"{label}: inclusion proof") for p in proof]
    if root_from_inclusion_proof(index, tree_size, leaf_hash(data), path) != root:
        raise Invalid(
            f"{label}: its leaf is not at log index {index} of the signed tree (altered leaf, index or proof)"
        )
    try:
        leaf = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Invalid(f"{label}: the leaf is not a JSON audit event")
    actor = event["actor"]
    if not isinstance(actor, dict) or set(actor) != {"type", "id", "label"}:
        raise Invalid(f"{label}: the actor is malformed")
    if not isinstance(leaf, dict) or not isinstance(leaf.get("object"), list) or len(leaf["object"]) != 2:
        raise Invalid(f"{label}: the leaf is not a JSON audit event")
    obj = leaf["object"]
    shown = {
        "id": event["id"],
        "occurred_at": event["at"],
        "actor": [actor.get("type"), actor.get("id"), actor.get("label")],
        "action": event["action"],
        "object": event["object"],
        "before": event["before"],
        "after": event["after"],
        "reason": event["reason"],
        "policy_version": event["policy_version"],
        "request_id": event["request_id"],
    }
    logged = {**{k: leaf.get(k) for k in shown}, "object": f"{obj[0]}:{obj[1]}"}
    for key in shown:
        if canonical(shown[key]) != canonical(logged[key]):
            raise Invalid(
                f"{label}: the pack shows {key} = {canonical(shown[key])[:80]}, the log recorded "
                f"{canonical(logged[key])[:80]}"
            )
    chained = "prev_hash" in leaf
    if chained and (event["prev_hash"] != leaf["prev_hash"] or event["hash"] != hashlib.sha256(data).hexdigest()):
        raise Invalid(f"{label}: its old chain hashes do not match its leaf")
    if not chained and (event["prev_hash"] != "" or event["hash"] is not None):
        raise Invalid(f"{label}: chain hashes shown for an event that has none")
    return (
        f"{label} at log index {index}: {leaf['occurred_at']} {leaf['actor'][2] or leaf['actor'][0]} {leaf['action']} {logged['object']}",
        leaf,
    )


def verify(pack_bytes: bytes, key: tuple[str, int, bytes]) -> tuple[int, list[str]]:
    """(exit status, report lines)."""
    try:
        pack = json.loads(pack_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return 1, ["FAIL: the pack is not valid JSON (it was altered or truncated)"]
    lines = []
    try:
        if (
            not isinstance(pack, dict)
            or not isinstance(pack.get("log"), dict)
            or not isinstance(pack.get("timeline"), list)
        ):
            raise Invalid("not a Registrar evidence pack (no timeline or log section)")
        if set(pack["log"]) != {"checkpoint"}:
            raise Invalid("the log section has missing or unexpected fields")
        timeline = pack["timeline"]
        if pack["log"]["checkpoint"] is None:
            if any(e.get("leaf") is not None for e in timeline if isinstance(e, dict)):
                raise Invalid("events carry proofs but the pack has no checkpoint")
            origin, size, root = key[0], 0, b""
        else:
            origin, size, root = open_checkpoint(pack["log"]["checkpoint"], key)
            lines.append(
                f"checkpoint: log {origin}, tree size {size}, root {root.hex()}, signed by {key[0]}+{key[1]:08x}"
            )
        proven, pending = [], []
        for event in timeline:
            result = check_event(event, size, root)
            if result is None:
                pending.append(event.get("id"))
            else:
                proven.append(result[0])
    except Invalid as exc:
        return 1, [*lines, f"FAIL: {exc}"]
    client = pack.get("client", {}).get("registration_id") if isinstance(pack.get("client"), dict) else None
    lines.append(
        f"PROVEN: {len(proven)} event{'s' * (len(proven) != 1)} of client {client} are in the audit log as shown:"
    )
    lines += [f"  {p}" for p in proven]
    unproven = [k for k in pack if k not in PROVEN_SECTIONS]
    if unproven:
        lines.append(
            f"NOT COVERED by the log: {', '.join(unproven)} — Registrar's current view when the pack was made; "
            "nothing here proves them, and a change to them is not detected (the proven events are the evidence)."
        )
    witnessed = pack.get("log_witness", {}).get("witnessed_at") if isinstance(pack.get("log_witness"), dict) else None
    if witnessed:
        lines.append(
            f"Registrar reports this checkpoint reached its witness at {witnessed} (not proven by the pack: "
            "compare the checkpoint with your own witness copy)."
        )
    if pending:
        lines.append(
            f"NOT PROVEN: {len(pending)} event(s) not sealed in the log when the pack was made: "
            f"{', '.join(f'#{p}' for p in pending)} — download the pack again in a few seconds."
        )
        return 2, lines
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pack", help="the evidence pack (JSON) downloaded from Registrar")
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="the log's verifier key: <name>+<key id>+<base64 key>")
    key.add_argument("--key-file", help="a file holding the verifier key")
    args = parser.parse_args(argv)
    encoded = args.key if args.key else open(args.key_file, encoding="utf-8").read()  # noqa: SIM115
    with open(args.pack, "rb") as fh:
        pack_bytes = fh.read()
    status, lines = verify(pack_bytes, parse_key(encoded))
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
