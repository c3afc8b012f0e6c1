"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and C2SP checkpoints (c2sp.org/tlog-checkpoint).

The key encodings are those of Go's ``golang.org/x/mod/sumdb/note`` (the reference implementation):

- signer (private) key: ``PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 || 32-byte Ed25519 seed)>``
- verifier (public) key: ``<name>+<key id, 8 hex>+<base64(0x01 || 32-byte Ed25519 public key)>``

with key id = the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key). Tests check all of it
against the Go package's published example (tests/portal/test_tlog_note.py). Ed25519 comes from
``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
MAX_SIGNATURES = 32
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_NAME = re.compile(r"^[^\s+]+$")


class NoteError(ValueError):
    """A malformed key, note or checkpoint, or a note no trusted key verifies."""


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not valid base64")


def _check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise NoteError(f"key name {name!r} must be non-empty without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """A log's public key, as a note verifier."""

    name: str
    key_id: int
    public_key: bytes

    @property
    def encoded(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{blob}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A log's private key, as a note signer. Never logged, never stored in the database."""

    name: str
    key_id: int
    seed: bytes

    def __repr__(self) -> str:  # keep the seed out of tracebacks and logs
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"

    @property
    def verifier(self) -> Verifier:
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Verifier(self.name, self.key_id, public)

    @property
    def encoded(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{blob}"

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _parse_key(name: str, hex_id: str, blob: str, *, what: str) -> tuple[str, int, bytes]:
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise NoteError(f"{what}: key id must be 8 lowercase hex digits")
    raw = _b64decode(blob, what)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError(f"{what}: only Ed25519 keys (algorithm 1, 32 bytes) are supported")
    return name, int(hex_id, 16), raw[1:]


def parse_verifier_key(encoded: str) -> Verifier:
    parts = encoded.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("verifier key must look like <name>+<key id>+<base64 key>")
    name, kid, public = _parse_key(parts[0], parts[1], parts[2], what="verifier key")
    if key_id(name, public) != kid:
        raise NoteError("verifier key: the key id does not match the name and key")
    return Verifier(name, kid, public)


def parse_signer_key(encoded: str) -> Signer:
    parts = encoded.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("signer key must look like PRIVATE+KEY+<name>+<key id>+<base64 key>")
    name, kid, seed = _parse_key(parts[2], parts[3], parts[4], what="signer key")
    signer = Signer(name, kid, seed)
    if key_id(name, signer.verifier.public_key) != kid:
        raise NoteError("signer key: the key id does not match the name and key")
    return signer


def generate_signer(name: str) -> Signer:
    _check_name(name)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Signer(name, key_id(name, public), seed)


# --- notes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    signature: bytes


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteError("note text must not contain control characters other than newline")


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    _check_text(text)
    lines = []
    for signer in signers:
        blob = signer.key_id.to_bytes(4, "big") + signer.sign(text.encode())
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(blob).decode()}\n")
    if not lines:
        raise NoteError("a note needs at least one signer")
    return text + "\n" + "".join(lines)


def parse_note(message: str) -> Note:
    """Split a signed note into its text and signatures (nothing verified yet)."""
    _check_text(message)
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    signatures = []
    for line in block.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed signature line")
        parts = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise NoteError("malformed signature line")
        name, blob = _check_name(parts[0]), _b64decode(parts[1], "signature")
        if len(blob) < 5:
            raise NoteError("signature is too short")
        signatures.append(Signature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
    if not signatures:
        raise NoteError("note has no signatures")
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError("note has too many signatures")
    return Note(text, tuple(signatures))


def open_note(message: str, verifiers: Iterable[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse ``message`` and verify it: (note, the known keys that signed it).

    As the spec requires: unknown keys are ignored, a known key whose signature fails rejects the note, and
    a note with no valid signature from a known key is rejected.
    """
    note = parse_note(message)
    known = {(v.name, v.key_id): v for v in verifiers}
    good = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(note.text.encode(), sig.signature):
            raise NoteError(f"signature by {sig.name}+{sig.key_id:08x} does not verify")
        good.append(verifier)
    if not good:
        raise NoteError("note is not signed by a trusted key")
    return note, good


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    @property
    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint's note text (c2sp.org/tlog-checkpoint): origin, tree size, root hash, extension lines."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteError("checkpoint must be at least three non-empty lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size):
        raise NoteError("checkpoint tree size must be a decimal number without leading zeroes")
    root_hash = _b64decode(root, "checkpoint root hash")
    if len(root_hash) != 32:
        raise NoteError("checkpoint root hash must be 32 bytes")
    return Checkpoint(origin, int(size), root_hash)


def open_checkpoint(message: str, verifiers: Iterable[Verifier]) -> tuple[Checkpoint, list[Verifier]]:
    """Verify a signed checkpoint and parse it; its origin must be the name of a key that signed it."""
    note, signed_by = open_note(message, verifiers)
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin not in {v.name for v in signed_by}:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not the name of the key that signed it")
    return checkpoint, signed_by
