"""Evidence packs prove themselves: the export is a logged event carrying the digest of the pack's content, and
the pack carries it, each timeline event's log entry, their inclusion proofs and the signed checkpoint; the
stand-alone tools/verify_evidence.py proves them with the log's public key and refuses a pack with any byte
changed, naming the section."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import threading
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections
from rest_framework.test import APIClient

from inventory.models import Client
from portal.audit import Actor, audit_record
from portal.models import AuditEvent, User
from portal.tlog.jcs import canonical_json
from portal.tlog.keys import log_verifier
from portal.tlog.note import generate_signer
from portal.tlog.sequencer import log_seal
from tests.dbtamper import triggers_off
from tests.factories import ClientFactory

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "verify_evidence.py"
pytestmark = pytest.mark.django_db


def _tool():
    spec = importlib.util.spec_from_file_location("verify_evidence", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sealed_client(idp, owner, django_capture_on_commit_callbacks):
    client = ClientFactory(name="evidence-bot", idp=idp, owner=owner)
    with django_capture_on_commit_callbacks(execute=True):
        audit_record(
            actor=Actor.user(owner),
            action="client.create",
            object_type="client",
            object_id=client.registration_id,
            after={"name": "evidence-bot", "note": 'é \u2028 "q"'},
        )
        audit_record(actor=Actor.system("other"), action="noise", object_type="thing", object_id="x")
        log_seal()
        audit_record(
            actor=Actor.system("provisioner"),
            action="client.activate",
            object_type="client",
            object_id=client.registration_id,
            reason="delivered",
        )
        log_seal()
    return client


def _pack(client, user, http) -> bytes:
    http.force_login(user)
    response = http.get(f"/inventory/{client.registration_id}/evidence.json")
    assert response.status_code == 200
    return response.content


def _verify(raw: bytes) -> tuple[int, list[str]]:
    tool = _tool()
    return tool.verify(raw, tool.parse_key(log_verifier().encoded))


def test_pack_carries_leaf_proof_and_checkpoint_and_the_tool_proves_it(client, security_user, sealed_client):
    raw = _pack(sealed_client, security_user, client)
    pack = json.loads(raw)
    assert list(pack)[-1] == "log" and set(pack["log"]) == {"checkpoint", "export", "entries"}
    assert [e["id"] for e in pack["log"]["entries"]] == [e["id"] for e in pack["timeline"]]
    assert [e["log_index"] for e in pack["log"]["entries"]] == [0, 2]
    assert all(e["leaf"] and e["inclusion_proof"] for e in pack["log"]["entries"])
    export = pack["log"]["export"]
    assert export["event"]["action"] == "client.evidence_exported" and export["log_index"] == 3
    assert pack["log"]["checkpoint"].startswith("registrar.test/audit-log\n4\n")  # sealed inline, with the export
    status, lines = _verify(raw)
    assert status == 0, lines
    report = "\n".join(lines)
    assert "PROVEN: the whole pack is what Registrar exported: event #" in report
    assert "client.evidence_exported client:" + sealed_client.registration_id in report
    assert "PROVEN: 2 timeline events of client" in report
    assert any("client.activate client:" in line for line in lines)


def test_the_export_is_logged_with_the_digest_of_the_packs_canonical_content(client, security_user, sealed_client):
    raw = _pack(sealed_client, security_user, client)
    pack = json.loads(raw)
    body = {name: value for name, value in pack.items() if name != "log"}
    event = AuditEvent.objects.get(action="client.evidence_exported")
    assert (event.actor_type, event.actor_id, event.actor_label) == ("user", str(security_user.pk), "ciso")
    assert event.object_id == sealed_client.registration_id and event.log_index == 3
    assert event.after["sha256"] == hashlib.sha256(canonical_json(body)).hexdigest()
    assert set(event.after["sections"]) == set(body) and "timeline" in body and "owner" in body
    assert event.after["sections"]["owner"] == hashlib.sha256(canonical_json(body["owner"])).hexdigest()
    assert pack["log"]["export"]["event"]["after"] == event.after
    # the file is exactly what the verifier expects to rebuild
    assert raw == (json.dumps(pack, indent=2) + "\n").encode()


def test_a_changed_section_fails_and_is_named(client, security_user, sealed_client):
    pack = json.loads(_pack(sealed_client, security_user, client))
    for section, change in (
        ("owner", lambda p: p["owner"].update(username="someone-else")),
        ("scopes", lambda p: p["scopes"].append({"name": "admin:all"})),
        ("approval", lambda p: p["approval"].append({"outcome": "approved"})),
        ("generated_at", lambda p: p.update(generated_at="2020-01-01T00:00:00+00:00")),
    ):
        altered = json.loads(json.dumps(pack))
        change(altered)
        status, lines = _verify((json.dumps(altered, indent=2) + "\n").encode())
        assert status == 1, section
        assert lines[-1].startswith(f"FAIL: {section}: this section is not what Registrar exported"), lines[-1]
    del pack["purpose"]
    status, lines = _verify((json.dumps(pack, indent=2) + "\n").encode())
    assert status == 1 and lines[-1].startswith("FAIL: purpose: section(s) Registrar exported are missing")


def test_the_api_serves_the_same_provable_file(security_user, sealed_client):
    api_client = APIClient()
    api_client.force_authenticate(security_user)
    response = api_client.get(f"/api/v1/clients/{sealed_client.registration_id}/evidence/")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    status, lines = _verify(response.content)
    assert status == 0, lines


def test_explain_page_says_what_it_verified(client, security_user, sealed_client):
    client.force_login(security_user)
    html = client.get(f"/inventory/{sealed_client.registration_id}/").content.decode()
    assert 'data-status="verified"' in html
    assert "2 events verified against checkpoint 3" in html and "(signed, witnessed at" in html


def test_explain_page_flags_a_log_that_does_not_verify(client, security_user, sealed_client):
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute("UPDATE portal_auditevent SET reason = 'edited' WHERE action = 'client.activate'")
    client.force_login(security_user)
    html = client.get(f"/inventory/{sealed_client.registration_id}/").content.decode()
    assert 'data-status="failed"' in html and "is not in the tree checkpoint 3 signs" in html


WHITESPACE = b" \n\t\r"


def _changes(byte: int) -> list[int]:
    """Single-byte changes tried at a position: the lowest bit, the case bit (base64, hex escapes), and for
    whitespace the other JSON whitespace (same content, another layout)."""
    changes = {byte ^ 0x01, byte ^ 0x20}
    if byte in WHITESPACE:
        changes |= set(WHITESPACE) - {byte}
    return sorted(changes)


def test_changing_any_byte_of_the_pack_fails_verification_and_names_the_section(client, security_user, sealed_client):
    raw = _pack(sealed_client, security_user, client)
    assert _verify(raw)[0] == 0
    tool = _tool()
    key = tool.parse_key(log_verifier().encoded)
    text = raw.decode()
    survivors, misnamed, tried = [], [], 0
    for position in range(len(raw)):  # every byte, each changed two to five ways
        section = tool.section_at(text, position)
        for value in _changes(raw[position]):
            altered = bytearray(raw)
            altered[position] = value
            status, lines = tool.verify(bytes(altered), key)
            tried += 1
            if status != 1:
                survivors.append((position, value, raw[position - 20 : position + 20]))
            elif not lines[-1].startswith(f"FAIL: {section}"):
                misnamed.append((position, section, lines[-1]))
    assert survivors == []
    assert misnamed == []
    assert tried > 2 * len(raw) > 10_000


@pytest.mark.postgres_only  # holds the sequencer's PostgreSQL advisory lock from a second connection
def test_an_export_the_sequencer_cannot_seal_in_time_says_fetch_again(transactional_db, security_user, idp):
    # Another sequencer holds the lock (a second connection): the export waits a bounded time, then hands out
    # the pack saying its export event is not sealed; the pack is still consistent, and nothing is half-written.
    from inventory.reports.evidence import evidence_export
    from portal.tlog.locks import SEQUENCER_LOCK

    target = ClientFactory(name="busy-bot", idp=idp)
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def hold():
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
                held.set()
                release.wait(30)
                cursor.execute("COMMIT")
        finally:
            other.close()
            done.set()

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(10)
    try:
        raw = evidence_export(client=target, actor=Actor.user(security_user), seal_timeout=0.2)
    finally:
        release.set()
        done.wait(10)
    pack = json.loads(raw)
    assert pack["log"]["export"]["log_index"] is None and pack["log"]["export"]["leaf"] is None
    status, lines = _verify(raw)
    assert status == 2, lines
    assert "export event not yet sealed: fetch the pack again" in lines[-1]
    # once the other sequencer is gone, the next export seals inline and proves everything
    status, lines = _verify(evidence_export(client=target, actor=Actor.user(security_user)))
    assert status == 0, lines
    assert AuditEvent.objects.filter(action="client.evidence_exported", log_index__isnull=False).count() == 2


def test_the_tool_refuses_another_key(client, security_user, sealed_client):
    tool = _tool()
    raw = _pack(sealed_client, security_user, client)
    status, lines = tool.verify(raw, tool.parse_key(generate_signer("registrar.test/audit-log").verifier.encoded))
    assert status == 1 and lines[-1].startswith("FAIL: log.checkpoint: the checkpoint is not signed by the key given")


def test_a_real_demo_clients_pack_verifies_on_the_command_line_and_fails_after_one_byte(client, tmp_path):
    call_command("seed_demo", "--password", "demo-pass-123", stdout=StringIO())
    log_seal()
    demo = (
        Client.objects.filter(registration_id__in=AuditEvent.objects.filter(object_type="client").values("object_id"))
        .order_by("pk")
        .first()
    )
    ciso = User.objects.get(username="ciso")
    raw = _pack(demo, ciso, client)
    pack_file = tmp_path / "pack.json"
    pack_file.write_bytes(raw)
    key_file = tmp_path / "log.pub"
    out = StringIO()
    call_command("log_keygen", "--verifier", stdout=out)  # how the operator hands the public key to an auditor
    assert out.getvalue() == log_verifier().encoded + "\n"
    key_file.write_text(out.getvalue())
    run = subprocess.run(
        [sys.executable, str(TOOL), str(pack_file), "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PROVEN:" in run.stdout and demo.registration_id in run.stdout
    assert "PROVEN: the whole pack is what Registrar exported" in run.stdout
    for marker, section in ((b'"leaf": "', "log."), (b'"username": "', "owner"), (b'"scopes": [', "scopes")):
        tampered = bytearray(raw)
        at = raw.index(marker) + len(marker) + 2
        tampered[at] ^= 0x01
        pack_file.write_bytes(bytes(tampered))
        run = subprocess.run(
            [sys.executable, str(TOOL), str(pack_file), "--key", log_verifier().encoded],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1 and f"FAIL: {section}" in run.stdout, (section, run.stdout)
