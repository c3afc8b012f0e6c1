"""C2SP signed notes and checkpoints, checked against the Go reference implementation's published example."""

from __future__ import annotations

import base64

import pytest

from portal.tlog.note import (
    Checkpoint,
    NoteError,
    generate_signer,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)

# golang.org/x/mod/sumdb/note's documented example (the reference implementation of c2sp.org/signed-note).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_keys_and_signatures_match_the_reference_byte_for_byte():
    signer = parse_signer_key(GO_SIGNER)
    assert (signer.name, signer.key_id) == ("PeterNeumann", 0xC74F20A3)
    assert signer.encoded == GO_SIGNER and signer.verifier.encoded == GO_VERIFIER
    assert parse_verifier_key(GO_VERIFIER) == signer.verifier
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE  # Ed25519 is deterministic
    note, by = open_note(GO_NOTE, [parse_verifier_key(GO_VERIFIER)])
    assert note.text == GO_TEXT and by == [signer.verifier]
    assert "AYEKFALV" not in repr(signer)  # the private key stays out of reprs and tracebacks


def test_notes_are_rejected_unless_a_trusted_key_verifies_them():
    verifier = parse_verifier_key(GO_VERIFIER)
    other = generate_signer("PeterNeumann")  # same name, another key: ignored, not trusted
    with pytest.raises(NoteError, match="not signed by a trusted key"):
        open_note(sign_note(GO_TEXT, [other]), [verifier])
    both = sign_note(GO_TEXT, [other, parse_signer_key(GO_SIGNER)])
    assert open_note(both, [verifier])[1] == [verifier]  # unknown signatures are ignored
    tampered = GO_NOTE.replace("cryptography", "cryptograpHy")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [verifier])
    for malformed in (
        GO_TEXT,
        GO_TEXT + "\n",
        GO_NOTE.replace("\u2014", "-"),
        GO_NOTE[:-1],
        GO_NOTE.replace("x08go", "x08go!"),
        "a\tb\n\n" + GO_NOTE.split("\n\n")[1],
    ):
        with pytest.raises(NoteError):
            open_note(malformed, [verifier])


def test_malformed_keys_are_refused():
    for bad in (
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpcQ==",
    ):
        with pytest.raises(NoteError):
            parse_verifier_key(bad)
    with pytest.raises(NoteError):
        parse_signer_key(GO_SIGNER.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(NoteError):
        parse_signer_key(GO_VERIFIER)


def test_checkpoints_follow_tlog_checkpoint():
    root = bytes(range(32))
    text = Checkpoint("example.com/log42", 20852163, root).text
    assert text == f"example.com/log42\n20852163\n{base64.b64encode(root).decode()}\n"
    assert parse_checkpoint(text) == Checkpoint("example.com/log42", 20852163, root)
    assert parse_checkpoint(text + "extension line\n").size == 20852163
    for bad in (
        "example.com/log42\n020852163\n" + text.split("\n")[2] + "\n",
        "a\n1\n\n",
        "a\n1\nAAAA\n",
        "a\n1\n",
        "a\n-1\n" + text.split("\n")[2] + "\n",
        text + "\n",
    ):
        with pytest.raises(NoteError):
            parse_checkpoint(bad)
    signer = generate_signer("example.com/log42")
    note = sign_note(text, [signer])
    assert open_checkpoint(note, [signer.verifier])[0].size == 20852163
    stranger = generate_signer("example.com/other")
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(sign_note(text, [stranger]), [stranger.verifier])
