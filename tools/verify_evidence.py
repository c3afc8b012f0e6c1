#!/usr/bin/env python3
"""Verify a Registrar evidence pack offline, with the audit log's public key. Needs only ``cryptography``.

    python tools/verify_evidence.py evidence-reg_….json --key 'registrar.example.com/audit-log+1a2b3c4d+AXSU…'
    python tools/verify_evidence.py pack.json --key-file log.pub

What it proves:

1. the pack's ``log.checkpoint`` is a C2SP checkpoint (c2sp.org/tlog-checkpoint) signed, as a C2SP signed
   note, by the key you gave — the log's key, obtained from Registrar's operators out of band, never from the
   pack;
2. the export event (``log.export``: ``client.evidence_exported``, by the person who downloaded the pack) is in
   the Merkle tree (RFC 9162) whose root that checkpoint signs, at ``log_index`` (``inclusion_proof`` is its
   audit path), and the SHA-256 it logged is the digest of every other section of the pack — their canonical
   JSON (RFC 8785 style, below), each section's digest logged too, so a changed section is named. So the whole
   pack (client, owner, approval, scopes, timeline…) is exactly what Registrar exported, and Registrar cannot
   later deny having said it;
3. each timeline event's ``leaf`` (``log.entries``: the exact bytes the log recorded) is in the same tree, and
   every field the timeline shows for it is what that leaf says;
4. the file is byte for byte as Registrar wrote it (``json.dumps(pack, indent=2)`` and a newline): the content
   is written back that way and compared, so not even whitespace or an escape can change unnoticed.

What it does not prove: that Registrar's view of the client was true — the sections are what Registrar said at
the export, now fixed in the log; the events are the history behind them. To know the checkpoint is the one
everybody else saw, compare it with your own copy of the log's checkpoints (a witness) — the consistency of
two checkpoints is what ``manage.py verify_audit --witness`` and log monitors check.

Exit status: 0 everything proven; 1 something does not verify (the first problem is printed, naming the
section); 2 nothing failed but the export event or some timeline events were not sealed in the log yet when
the pack was made (so not proven: fetch the pack again).

This file is deliberately self-contained and independent of Registrar's own code: an auditor can read all of
what is checked here, and a bug in Registrar's implementation cannot hide in a shared one.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EM_DASH = "\u2014 "
SCHEMA = "registrar.evidence-pack/3"
EXPORT_ACTION = "client.evidence_exported"
EVENT_KEYS = {
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
}
PROOF_KEYS = {"log_index", "leaf", "inclusion_proof"}
LOG_KEYS = {"checkpoint", "export", "entries"}


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
    """For comparing two JSON values (sorted keys, compact): equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- canonical JSON (RFC 8785 style) ---------------------------------------------------------------------------
# What the export event's digests are computed over. RFC 8785 (JCS): no whitespace; members sorted by the UTF-16
# code units of their names; strings in UTF-8 with only '"', '\\' and control characters escaped; numbers as
# ECMAScript writes them. One difference: integers keep all their digits (JCS would round them through a double
# past 2**53), so two different integers never share a digest.


def jcs(value) -> bytes:
    return "".join(_jcs(value)).encode("utf-8")


def _jcs(value):
    if value is None or value is True or value is False:
        yield {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, int):
        yield str(value)
    elif isinstance(value, float):
        yield es_number(value)
    elif isinstance(value, str):
        yield json.dumps(value, ensure_ascii=False)  # escapes exactly '"', '\\' and U+0000..U+001F (§3.2.2.2)
    elif isinstance(value, dict):
        yield "{"
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            yield ("," if i else "") + json.dumps(key, ensure_ascii=False) + ":"
            yield from _jcs(value[key])
        yield "}"
    elif isinstance(value, list):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _jcs(item)
        yield "]"
    else:
        raise Invalid(f"not a JSON value: {type(value).__name__}")


def es_number(value: float) -> str:
    """ECMAScript's Number.prototype.toString (RFC 8785 §3.2.2.3): the shortest round-trip digits (repr's)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise Invalid("NaN and infinities are not JSON numbers")
    if value == 0:
        return "0"
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exp or 0) - (len(whole + fraction) - len(digits))  # where the decimal point goes
    digits = digits.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = f"0.{'0' * -n}{digits}"
    else:
        text = f"{digits[0]}{'.' + digits[1:] if k > 1 else ''}e{'+' if n > 0 else '-'}{abs(n - 1)}"
    return ("-" if value < 0 else "") + text


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


# A top-level member's line: an indent of two, a quote, the name — read loosely (one of those bytes may be the
# altered one); deeper lines (four spaces or more) and closing lines ("  },") do not match.
_MEMBER_LINE = re.compile(
    r'(?:[^\n]{2}"|  [^ \n]|   (?=[A-Za-z_]))([A-Za-z_\ufffd\x00-\x09\x0b-\x1f]+)(?:[^ \n]?:|[^ \n]{0,2} )'
)


def section_at(text: str, position: int) -> str:
    """The top-level section of the pack holding ``position``. Registrar writes each top-level member on a line
    of its own (``  "name": …``); every line up to the next such line is that member's, and a newline belongs
    to the line it ends. The opening brace goes with the first member."""
    end = position
    while (at := text.rfind("\n", 0, end)) >= 0:
        member = _MEMBER_LINE.match(text, at + 1)
        if member:
            return re.sub(r"[\x00-\x1f\ufffd]", "?", member.group(1))  # an altered byte in the name itself
        end = at
    return "schema"


def check_event(event, proof, tree_size: int, root: bytes, shown_in: str, proof_in: str) -> tuple[str, dict] | None:
    """Prove ``event`` (as the section ``shown_in`` shows it) with ``proof`` (its log index, leaf and inclusion
    proof, in the section ``proof_in``). None when it is not sealed yet; else (description, leaf). Raises
    Invalid, naming the section at fault."""
    if not isinstance(event, dict) or set(event) != EVENT_KEYS:
        raise Invalid(f"{shown_in}: an event has missing or unexpected fields")
    label = f"{proof_in}: event #{event['id']}"
    if proof["log_index"] is None and proof["leaf"] is None and proof["inclusion_proof"] is None:
        return None
    index, path = proof["log_index"], proof["inclusion_proof"]
    if type(index) is not int or not isinstance(path, list):
        raise Invalid(f"{label}: log_index or inclusion_proof is malformed")
    data = b64decode(proof["leaf"], f"{label}: leaf")
    hashes = [b64decode(p, f"{label}: inclusion proof") for p in path]
    try:
        computed = root_from_inclusion_proof(index, tree_size, leaf_hash(data), hashes)
    except Invalid as exc:
        raise Invalid(f"{label}: {exc}")
    if computed != root:
        raise Invalid(
            f"{label}: its leaf is not at log index {index} of the signed tree (altered leaf, index or proof)"
        )
    try:
        leaf = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Invalid(f"{label}: the leaf is not a JSON audit event")
    label = f"{shown_in}: event #{event['id']}"  # the proof holds: what differs now is what the pack shows
    actor = event["actor"]
    if not isinstance(actor, dict) or set(actor) != {"type", "id", "label"}:
        raise Invalid(f"{label}: the actor is malformed")
    if not isinstance(leaf, dict) or not isinstance(leaf.get("object"), list) or len(leaf["object"]) != 2:
        raise Invalid(f"{proof_in}: event #{event['id']}: the leaf is not a JSON audit event")
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
        f"event #{event['id']} at log index {index}: {leaf['occurred_at']} {leaf['actor'][2] or leaf['actor'][0]} "
        f"{leaf['action']} {logged['object']}",
        leaf,
    )


def _proof(value, keys: set, where: str) -> dict:
    if not isinstance(value, dict) or set(value) != keys:
        raise Invalid(f"{where}: missing or unexpected fields")
    return value


def check_digests(body: dict, logged, event_id) -> str:
    """The sections' digests against those the export event logged; the whole body's digest (hex)."""
    if not isinstance(logged, dict) or set(logged) != {"schema", "sha256", "sections"}:
        raise Invalid(f"log.export: event #{event_id} does not carry the pack's digests")
    sections = logged["sections"]
    if not isinstance(sections, dict):
        raise Invalid(f"log.export: event #{event_id} does not carry the pack's digests")
    missing = [name for name in sections if name not in body]
    if missing:
        extra = [name for name in body if name not in sections]
        raise Invalid(
            f"{', '.join(missing)}: section(s) Registrar exported are missing from the pack"
            + (f" (it has {', '.join(extra)} instead)" if extra else "")
        )
    for name in body:
        if name not in sections:
            raise Invalid(f"{name}: this section was not in the pack Registrar exported (event #{event_id})")
        if sha256_hex(jcs(body[name])) != sections[name]:
            raise Invalid(
                f"{name}: this section is not what Registrar exported — its SHA-256 differs from the one logged "
                f"by the export event #{event_id}"
            )
    digest = sha256_hex(jcs(body))
    if digest != logged["sha256"] or body.get("schema") != logged["schema"]:
        raise Invalid(f"the pack's digest differs from the one logged by the export event #{event_id}")
    return digest


def verify(pack_bytes: bytes, key: tuple[str, int, bytes]) -> tuple[int, list[str]]:
    """(exit status, report lines)."""
    text = pack_bytes.decode("utf-8", errors="replace")
    try:
        pack = json.loads(pack_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return 1, [f"FAIL: {section_at(text, exc.start)}: the pack is not UTF-8 text (altered at byte {exc.start})"]
    except ValueError as exc:
        at = getattr(exc, "pos", 0)
        return 1, [f"FAIL: {section_at(text, at)}: the pack is not valid JSON (altered or truncated near byte {at})"]
    lines = []
    try:
        if not isinstance(pack, dict) or not isinstance(pack.get("log"), dict) or set(pack["log"]) != LOG_KEYS:
            raise Invalid("log: not a Registrar evidence pack (no log section with checkpoint, export and entries)")
        if pack.get("schema") != SCHEMA:
            raise Invalid(f"schema: this tool checks {SCHEMA} packs, not {pack.get('schema')!r}")
        log = pack["log"]
        body = {name: value for name, value in pack.items() if name != "log"}
        timeline, entries = body.get("timeline"), log["entries"]
        if not isinstance(timeline, list):
            raise Invalid("timeline: the section is missing or not a list of events")
        if not isinstance(entries, list) or len(entries) != len(timeline):
            raise Invalid("log.entries: not one entry per timeline event")
        if log["checkpoint"] is None:
            origin, size, root = key[0], 0, b""
        else:
            try:
                origin, size, root = open_checkpoint(log["checkpoint"], key)
            except Invalid as exc:
                raise Invalid(f"log.checkpoint: {exc}")
            lines.append(
                f"checkpoint: log {origin}, tree size {size}, root {root.hex()}, signed by {key[0]}+{key[1]:08x}"
            )

        export = _proof(log["export"], {"event"} | PROOF_KEYS, "log.export")
        exported = check_event(export["event"], export, size, root, "log.export", "log.export")
        event = export["event"]

        proven, pending = [], []
        for i, (shown, entry) in enumerate(zip(timeline, entries, strict=True)):
            entry = _proof(entry, {"id"} | PROOF_KEYS, f"log.entries[{i}]")
            result = check_event(shown, entry, size, root, "timeline", "log.entries")
            if entry["id"] != shown["id"]:  # the leaf agreed with the timeline: the entry's label is wrong
                raise Invalid(
                    f"log.entries[{i}]: says event #{entry['id']}, the proof is timeline event #{shown['id']}"
                )
            if result is None:
                pending.append(shown["id"])
            else:
                proven.append(result[0])

        # Then the sections themselves (a changed timeline event is named more precisely above).
        if exported is not None:
            leaf = exported[1]
            digest = check_digests(body, leaf["after"], event["id"])
            if leaf["action"] != EXPORT_ACTION or leaf["object"] != ["client", body["client"]["registration_id"]]:
                raise Invalid(f"log.export: event #{event['id']} is not the export of this pack's client")
        else:
            check_digests(body, event["after"], event["id"])  # not proven, but it must at least agree
    except Invalid as exc:
        return 1, [*lines, f"FAIL: {exc}"]
    # Last, the layout: content checked above, this is what remains (whitespace, escapes, duplicate keys).
    expected = json.dumps(pack, indent=2) + "\n"
    if expected != text:
        at = next((i for i, (a, b) in enumerate(zip(expected, text, strict=False)) if a != b), len(expected))
        return 1, [
            *lines,
            f"FAIL: {section_at(expected, at)}: the file is not byte for byte as Registrar wrote it (byte {at}: "
            "whitespace, an escape, a duplicate key or the layout changed) — verify the file as downloaded",
        ]

    client_id = body["client"].get("registration_id") if isinstance(body.get("client"), dict) else None
    if exported is not None:
        lines.append(
            f"PROVEN: the whole pack is what Registrar exported: {exported[0]} logged the SHA-256 {digest} of its "
            f"canonical content — every section but log ({', '.join(body)})."
        )
    lines.append(
        f"PROVEN: {len(proven)} timeline event{'s' * (len(proven) != 1)} of client {client_id} "
        f"{'is' if len(proven) == 1 else 'are'} in the audit log as shown:"
    )
    lines += [f"  {p}" for p in proven]
    lines.append(
        "Not proven by any pack: that Registrar's view was true (the sections are what it said at the export, now "
        "fixed in the log), nor that this checkpoint is the one everybody saw — compare it with your witness copy."
    )
    status = 0
    if exported is None:
        lines.append(
            f"NOT PROVEN: the export event #{event['id']} was not sealed in the log when the pack was made, so "
            "only the timeline events listed above are proven — export event not yet sealed: fetch the pack again."
        )
        status = 2
    if pending:
        lines.append(
            f"NOT PROVEN: {len(pending)} event(s) not sealed in the log when the pack was made: "
            f"{', '.join(f'#{p}' for p in pending)} — fetch the pack again in a few seconds."
        )
        status = 2
    return status, lines


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
