"""Evidence packs carry, per event, its log entry, its inclusion proof and the signed checkpoint; the stand-alone
tools/verify_evidence.py proves them with the log's public key and refuses a pack with any byte changed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from inventory.models import Client
from portal.audit import Actor, audit_record
from portal.models import AuditEvent, User
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


def test_pack_carries_leaf_proof_and_checkpoint_and_the_tool_proves_it(client, security_user, sealed_client):
    raw = _pack(sealed_client, security_user, client)
    pack = json.loads(raw)
    assert [e["log_index"] for e in pack["timeline"]] == [0, 2]
    assert all(e["leaf"] and e["inclusion_proof"] for e in pack["timeline"])
    assert pack["log"]["checkpoint"].startswith("registrar.test/audit-log\n3\n")
    assert pack["log_witness"]["witnessed_at"]
    status, lines = _tool().verify(raw, _tool().parse_key(log_verifier().encoded))
    assert status == 0, lines
    assert "PROVEN: 2 events of client" in "\n".join(lines)
    assert "client.activate client:" in lines[-2] or any("client.activate" in line for line in lines)


def test_the_tool_names_the_sections_it_does_not_prove(client, security_user, sealed_client):
    # the client, owner, approval… sections are Registrar's current view: a change there is not detected, and
    # the tool says so rather than letting "PROVEN" read as covering them
    pack = json.loads(_pack(sealed_client, security_user, client))
    pack["owner"] = {"username": "someone-else"}
    status, lines = _tool().verify(json.dumps(pack).encode(), _tool().parse_key(log_verifier().encoded))
    assert status == 0
    (note,) = [line for line in lines if line.startswith("NOT COVERED by the log: ")]
    assert (
        "client" in note and "owner" in note and "timeline" not in note and "a change to them is not detected" in note
    )


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


def test_changing_any_byte_of_the_proven_sections_fails_verification(client, security_user, sealed_client):
    raw = _pack(sealed_client, security_user, client)
    tool = _tool()
    key = tool.parse_key(log_verifier().encoded)
    start = raw.index(b'"timeline": [')
    assert raw.index(b'"log": {') > start  # the timeline and the checkpoint close the pack
    survivors = []
    for position in range(start, len(raw)):
        altered = bytearray(raw)
        altered[position] ^= 0x01
        status, _ = tool.verify(bytes(altered), key)
        if status != 1:
            survivors.append((position, raw[position - 20 : position + 20]))
    assert survivors == []
    assert len(raw) - start > 2000  # leaves, proofs and the note: a real span of bytes was tried


def test_the_tool_refuses_another_key_and_reports_unsealed_events(client, security_user, sealed_client):
    tool = _tool()
    raw = _pack(sealed_client, security_user, client)
    status, lines = tool.verify(raw, tool.parse_key(generate_signer("registrar.test/audit-log").verifier.encoded))
    assert status == 1 and "not signed by the key given" in lines[-1]
    audit_record(
        actor=Actor.system("t"), action="client.renew", object_type="client", object_id=sealed_client.registration_id
    )
    status, lines = tool.verify(_pack(sealed_client, security_user, client), tool.parse_key(log_verifier().encoded))
    assert status == 2 and "NOT PROVEN: 1 event(s) not sealed" in lines[-1]


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
    tampered = bytearray(raw)
    at = raw.index(b'"leaf": "') + len(b'"leaf": "') + 10
    tampered[at] = ord("A") if tampered[at] != ord("A") else ord("B")
    pack_file.write_bytes(bytes(tampered))
    run = subprocess.run(
        [sys.executable, str(TOOL), str(pack_file), "--key", log_verifier().encoded],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "FAIL:" in run.stdout
