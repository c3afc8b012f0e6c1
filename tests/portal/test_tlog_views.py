"""/log/checkpoint and /log/tile/…: what a monitor follows, read-only, for security users and log:read tokens;
API token rights; the seal lag in /healthz and on the dashboard; the witness directory."""

from __future__ import annotations

import hashlib
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.audit import Actor, audit_record, leaf_data
from portal.crypto import hash_token
from portal.models import ApiToken, AuditEvent, LogCheckpoint, LogWitnessReceipt
from portal.tlog import merkle
from portal.tlog.keys import log_verifier
from portal.tlog.note import open_checkpoint
from portal.tlog.sequencer import log_seal
from portal.tlog.witness import DirectoryWitness, witness_publish
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _token(user, rights, plaintext):
    ApiToken.objects.create(user=user, name="t", prefix=plaintext[:12], token_hash=hash_token(plaintext), rights=rights)
    return {"HTTP_AUTHORIZATION": f"Token {plaintext}"}


@pytest.fixture
def sealed(db):
    for i in range(300):
        audit_record(actor=Actor.system("t"), action="test.event", object_type="thing", object_id=i, after={"i": i})
    log_seal()
    return 300


def test_a_monitor_with_a_log_read_token_follows_the_log_from_tiles(client, sealed):
    monitor = UserFactory(username="monitor")  # no role at all: the token's right is what counts
    auth = _token(monitor, ["log:read"], "rapi_monitor_" + "m" * 30)
    response = client.get("/log/checkpoint", **auth)
    assert response.status_code == 200 and response["Content-Type"] == "text/plain; charset=utf-8"
    checkpoint, _ = open_checkpoint(response.content.decode(), [log_verifier()])
    assert checkpoint.size == 300
    full = client.get("/log/tile/0/000", **auth)
    partial = client.get("/log/tile/0/001.p/44", **auth)
    level1 = client.get("/log/tile/1/000.p/1", **auth)
    assert [r.status_code for r in (full, partial, level1)] == [200, 200, 200]
    assert len(full.content) == 256 * 32 and len(partial.content) == 44 * 32
    assert "immutable" in full["Cache-Control"]
    # the monitor recomputes the root from the tiles and the entries hash to the leaves
    assert (
        merkle.node_hash(
            level1.content,
            merkle.root(
                44,
                lambda lvl, i: merkle.perfect_root(
                    [partial.content[j : j + 32] for j in range((i << lvl) * 32, ((i + 1) << lvl) * 32, 32)]
                ),
            ),
        )
        == checkpoint.root
    )
    bundle = client.get("/log/tile/entries/001.p/44", **auth).content
    entries, at = [], 0
    while at < len(bundle):
        length = int.from_bytes(bundle[at : at + 2], "big")
        entries.append(bundle[at + 2 : at + 2 + length])
        at += 2 + length
    assert len(entries) == 44 and [merkle.leaf_hash(e) for e in entries] == [
        partial.content[j : j + 32] for j in range(0, 44 * 32, 32)
    ]
    assert entries[0] == leaf_data(AuditEvent.objects.get(log_index=256))


def test_what_the_log_has_not_signed_is_not_served(client, security_user, sealed):
    client.force_login(security_user)
    assert client.get("/log/tile/0/001").status_code == 404  # not full yet
    assert client.get("/log/tile/0/001.p/45").status_code == 404  # wider than the tree
    assert client.get("/log/tile/entries/001.p/45").status_code == 404
    assert client.get("/log/tile/0/x000/001").status_code == 404  # not the canonical path
    assert client.get("/log/tile/0/001.p/44").status_code == 200
    assert client.post("/log/checkpoint").status_code == 405


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("anonymous", 401),
        ("owner", 403),
        ("security", 200),
        ("admin", 200),
        ("api-token", 403),
        ("bad-token", 401),
        ("log-token", 200),
    ],
)
def test_who_may_read_the_log(client, sealed, who, expected):
    headers = {}
    if who in ("owner", "security", "admin"):
        client.force_login(UserFactory(username=f"u-{who}", roles=[who]))
    elif who == "api-token":
        headers = _token(UserFactory(roles=["security"]), ["api"], "rapi_apionly_" + "a" * 30)
    elif who == "bad-token":
        headers = {"HTTP_AUTHORIZATION": "Token nope"}
    elif who == "log-token":
        headers = _token(UserFactory(), ["log:read"], "rapi_logtok__" + "l" * 30)
    assert client.get("/log/checkpoint", **headers).status_code == expected
    assert client.get("/log/tile/0/000", **headers).status_code == (200 if expected == 200 else expected)


def test_a_log_read_token_cannot_use_the_management_api(client, db):
    admin = UserFactory(username="root", roles=["admin"])
    assert client.get("/api/v1/clients/", **_token(admin, ["log:read"], "rapi_logonly_" + "x" * 30)).status_code == 403
    assert client.get("/api/v1/clients/", **_token(admin, ["api"], "rapi_apiok___" + "y" * 30)).status_code == 200


def test_create_api_token_grants_the_rights_asked_for(db):
    UserFactory(username="monitor")
    out = StringIO()
    call_command("create_api_token", "--user", "monitor", "--name", "ct monitor", "--right", "log:read", stdout=out)
    assert ApiToken.objects.get(name="ct monitor").rights == ["log:read"]
    call_command("create_api_token", "--user", "monitor", "--name", "default", stdout=StringIO())
    assert ApiToken.objects.get(name="default").rights == ["api"]
    with pytest.raises(CommandError, match="unknown right 'log:write'"):
        call_command("create_api_token", "--user", "monitor", "--name", "x", "--right", "log:write", stdout=StringIO())
    assert not ApiToken.objects.filter(name="x").exists()


def test_readyz_reports_the_seal_lag_without_failing_on_it(client, db, settings, django_assert_num_queries):
    """Liveness (/healthz) touches nothing; readiness names the seal lag as a check that warns, never fails."""
    audit_record(actor=Actor.system("t"), action="x", object_type="t", object_id=1)
    with django_assert_num_queries(0):
        assert client.get("/healthz").json() == {"status": "ok"}
    check = client.get("/readyz").json()["checks"]["audit_log"]
    assert check["status"] == "ok" and check["required"] is False and check["seal_lag_seconds"] >= 0
    log_seal()
    assert client.get("/readyz").json()["checks"]["audit_log"]["seal_lag_seconds"] == 0.0


def test_dashboard_shows_the_seal_lag_and_latest_checkpoint(client, security_user, sealed):
    client.force_login(security_user)
    html = client.get("/dashboards/").content.decode()
    assert 'data-stat="seal-lag"' in html and "Audit log seal lag" in html and "checkpoint 300" in html


def test_checkpoints_reach_the_witness_directory_and_a_failed_witness_catches_up(sealed, log_witness_dir, settings):
    assert witness_publish() == 1
    records = list(DirectoryWitness(log_witness_dir).checkpoints())
    assert [r.note for r in records] == [LogCheckpoint.objects.get().note]
    assert LogWitnessReceipt.objects.get().witness == f"dir:{log_witness_dir}"
    assert witness_publish() == 0  # already there: not written twice
    # a witness that cannot be written (a file where its directory should be) gets them later, in order
    blocked = log_witness_dir.parent / "blocked"
    blocked.write_text("not a directory")
    settings.REGISTRAR_LOG_WITNESS = [str(blocked)]
    audit_record(actor=Actor.system("t"), action="x", object_type="t", object_id="late")
    log_seal()
    assert witness_publish() == 0 and not LogWitnessReceipt.objects.filter(witness=f"dir:{blocked}").exists()
    blocked.unlink()
    assert witness_publish() == 2
    lines = [json.loads(line) for f in sorted(blocked.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [line["tree_size"] for line in lines] == [300, 301]


def test_a_syslog_witness_gets_one_line_per_checkpoint(sealed, settings):
    import socket

    from portal.tlog.witness import witness_from_spec

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        settings.REGISTRAR_LOG_WITNESS = [f"syslog://127.0.0.1:{port}"]
        assert witness_publish() == 1
        line = collector.recv(65536).decode()
    assert "registrar-audit-log: " in line and '"tree_size": 300' in line
    assert LogWitnessReceipt.objects.filter(witness=f"syslog:127.0.0.1:{port}").count() == 1
    with pytest.raises(NotImplementedError):
        list(witness_from_spec(f"syslog://127.0.0.1:{port}").checkpoints())


def test_an_unknown_witness_is_refused():
    from django.core.exceptions import ImproperlyConfigured

    from portal.tlog.witness import witness_from_spec

    with pytest.raises(ImproperlyConfigured, match="unknown witness"):
        witness_from_spec("s3://bucket/checkpoints")


def _bundle_entries(bundle: bytes) -> list[bytes]:
    entries, at = [], 0
    while at < len(bundle):
        length = int.from_bytes(bundle[at : at + 2], "big")
        entries.append(bundle[at + 2 : at + 2 + length])
        at += 2 + length
    assert at == len(bundle)
    return entries


def test_a_big_event_is_served_in_its_entry_bundle(client, security_user):
    # an event whose full entry would not fit a uint16-length-prefixed bundle (c2sp.org/tlog-tiles): its largest
    # value is logged as a digest at append, so every entry the log holds can be served
    big = {"jwks": {"keys": [{"kty": "RSA", "n": "x" * 40_000, "kid": f"k{i}"} for i in range(3)]}, "client": "c"}
    audit_record(actor=Actor.system("t"), action="test.small", object_type="thing", object_id=1, after={"i": 1})
    event = audit_record(actor=Actor.system("t"), action="test.big", object_type="thing", object_id=2, after=big)
    assert log_seal().tree_size == 2
    client.force_login(security_user)
    response = client.get("/log/tile/entries/000.p/2")
    assert response.status_code == 200
    entries = _bundle_entries(response.content)
    tile = client.get("/log/tile/0/000.p/2").content
    assert [merkle.leaf_hash(e) for e in entries] == [tile[:32], tile[32:]]
    stored = AuditEvent.objects.get(pk=event.pk)
    assert entries[1] == leaf_data(stored) and len(entries[1]) <= 0xFFFF
    logged = json.loads(entries[1])["after"]
    assert logged["client"] == "c" and logged["jwks"]["keys"][0]["kid"] == "k0"  # the rest is kept
    # the largest strings first, in document order, until the entry fits: two of the three do
    original = json.dumps("x" * 40_000).encode()
    digest = {"$omitted": {"bytes": len(original), "sha256": hashlib.sha256(original).hexdigest()}}
    assert [k["n"] for k in logged["jwks"]["keys"]] == [digest, digest, "x" * 40_000]
    assert stored.after == logged
