"""The audit log: appending is a plain insert, the sequencer places events in the log, the database refuses
changes, and verification finds tampering — including the two forgeries the old hash chain let through."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.audit import (
    GENESIS_HASH,
    Actor,
    audit_event,
    audit_record,
    audit_record_many,
    canonical_payload,
    compute_hash,
    event_insert,
    event_inserted,
    leaf_data,
    log_appended,
    verify_chain,
)
from portal.models import AuditEvent, AuditHead, LogCheckpoint, LogTile
from portal.tlog import merkle
from portal.tlog.note import Checkpoint, generate_signer, sign_note
from portal.tlog.sequencer import LogStateError, append_leaves, log_seal, log_seal_preindexed, seal_lag_seconds
from portal.tlog.tiles import TileSet
from portal.tlog.verify import verify_log
from tests.dbtamper import disable_event_trigger, set_event_id_sequence, triggers_off

pytestmark = pytest.mark.django_db


def _append(n: int, actor=None, **extra):
    actor = actor or Actor.system("test")
    return [
        audit_record(actor=actor, action="test.event", object_type="thing", object_id=i, after={"i": i}, **extra)
        for i in range(n)
    ]


def test_append_is_one_insert_and_takes_no_place_in_the_log(django_assert_num_queries):
    with django_assert_num_queries(1) as ctx:
        event = audit_record(actor=Actor.system("t"), action="x", object_type="t", object_id=1)
    sql = ctx.captured_queries[0]["sql"]
    assert sql.startswith("INSERT INTO") and "portal_audithead" not in sql and "FOR UPDATE" not in sql
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.log_index, stored.prev_hash, stored.hash) == (None, "", None)


def test_sequencer_gives_consecutive_indexes_in_id_order_and_signs_checkpoints():
    events = _append(7)
    report = log_seal(batch_size=3)
    assert (report.sealed, report.tree_size, report.checkpoints) == (7, 7, [3, 6, 7])
    indexes = list(AuditEvent.objects.order_by("id").values_list("log_index", flat=True))
    assert indexes == list(range(7))
    assert list(LogCheckpoint.objects.values_list("tree_size", flat=True)) == [3, 6, 7]
    # the root of the signed tree is the RFC 9162 root of the events' leaves, in order
    leaves = [merkle.leaf_hash(leaf_data(AuditEvent.objects.get(pk=e.pk))) for e in events]
    tree = merkle.CompactTree()
    for leaf in leaves:
        tree.append(leaf)
    assert LogCheckpoint.objects.get(tree_size=7).root_hash == tree.root().hex()
    assert log_seal().sealed == 0  # nothing waits: no new checkpoint
    assert LogCheckpoint.objects.count() == 3
    assert verify_chain() == (7, None)


def test_bulk_append_then_seal_keeps_the_order():
    (first,) = _append(1)
    rows = audit_record_many(
        [
            {"actor": Actor.system("sweep"), "action": "client.expired", "object_type": "client", "object_id": f"c{i}"}
            for i in range(5)
        ]
    )
    assert [r.id for r in rows] == sorted(r.id for r in rows) and rows[0].id > first.id
    log_seal()
    assert list(AuditEvent.objects.order_by("log_index").values_list("id", flat=True)) == [first.id] + [
        r.id for r in rows
    ]
    assert verify_chain() == (6, None)


def test_secrets_are_censored_before_logging():
    event = audit_record(
        actor=Actor.system("t"),
        action="x",
        object_type="t",
        object_id=1,
        after={"registration_access_token": "abc", "nested": {"client_secret": "s"}, "name": "n"},
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.after == {
        "registration_access_token": "********",
        "nested": {"client_secret": "********"},
        "name": "n",
    }
    assert b"abc" not in leaf_data(stored)


def test_database_refuses_update_and_delete_but_lets_the_log_index_be_set_once():
    (event,) = _append(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():  # the index, plus a change
        AuditEvent.objects.filter(pk=event.pk).update(log_index=0, reason="tampered")
    AuditEvent.objects.filter(pk=event.pk).update(log_index=0)  # the sequencer's one-time assignment
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(log_index=5)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(log_index=None)
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.reason, stored.log_index) == ("test.event", "", 0)


def test_database_refuses_changes_to_checkpoints_and_lets_tiles_only_grow():
    _append(3)
    log_seal()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LogCheckpoint.objects.update(root_hash="0" * 64)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LogCheckpoint.objects.all().delete()
    tile = LogTile.objects.get(level=0, tile_index=0)
    with pytest.raises(DatabaseError, match="only grow"), transaction.atomic():
        LogTile.objects.filter(pk=tile.pk).update(hashes=b"\0" * len(tile.hashes))
    with pytest.raises(DatabaseError, match="only grow"), transaction.atomic():
        LogTile.objects.filter(pk=tile.pk).delete()
    LogTile.objects.filter(pk=tile.pk).update(hashes=bytes(tile.hashes) + b"\1" * 32)  # growing is allowed


# --- tampering ------------------------------------------------------------------------------------------


def _as_superuser(*statements: tuple[str, list]):
    """What a database superuser can do: switch the triggers off and write."""
    with triggers_off(), connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def _rebuild_tiles():
    """The attacker recomputes every stored hash from the (altered) events, as the sequencer would."""
    rows = AuditEvent.objects.exclude(log_index=None).order_by("log_index")
    tiles = TileSet()
    append_leaves(tiles, 0, [merkle.leaf_hash(leaf_data(e)) for e in rows])
    statements = [("DELETE FROM portal_logtile", [])]
    statements += [
        ("INSERT INTO portal_logtile (level, tile_index, hashes) VALUES (%s, %s, %s)", [level, index, bytes(hashes)])
        for (level, index), hashes in tiles.tiles.items()
    ]
    _as_superuser(*statements)


def _verify_audit(capsys, *args) -> tuple[int, str]:
    try:
        call_command("verify_audit", *args)
    except SystemExit as exc:
        return exc.code, capsys.readouterr().err
    return 0, capsys.readouterr().out


def _approval_history():
    """Ten events, among them an approval, sealed in two checkpoints and sent to the witness."""
    approver = Actor("user", "7", "bob")
    for i in range(4):
        audit_record(
            actor=Actor.system("t"),
            action="registration.pending",
            object_type="registration_request",
            object_id=f"reg_{i}",
        )
    approval = audit_record(
        actor=approver,
        action="request.approve",
        object_type="registration_request",
        object_id="reg_2",
        reason="needed for the release",
        after={"state": "approved"},
    )
    log_seal()
    for i in range(5):
        audit_record(
            actor=Actor.system("provisioner"), action="client.activate", object_type="client", object_id=f"reg_{i}"
        )
    log_seal()
    return approval


def test_verify_passes_on_an_untouched_log(capsys, django_capture_on_commit_callbacks, log_witness_dir):
    with django_capture_on_commit_callbacks(execute=True):
        _approval_history()
    code, out = _verify_audit(capsys)
    assert code == 0, out
    assert "audit log intact: 10 events verified" in out and "2 signed checkpoints" in out
    assert f"2 witnessed checkpoints ({log_witness_dir})" in out


def test_forgery_delete_the_tail_and_move_the_head_back_is_caught_by_the_witness(
    capsys, django_capture_on_commit_callbacks, log_witness_dir, tmp_path
):
    with django_capture_on_commit_callbacks(execute=True):
        _approval_history()
    # Someone with database rights removes the last five events and everything that recorded them: the
    # checkpoint that covers them and the tiles, cut back to what the first checkpoint signed.
    first = LogCheckpoint.objects.get(tree_size=5)
    tiles = TileSet()
    append_leaves(tiles, 0, [merkle.leaf_hash(leaf_data(e)) for e in AuditEvent.objects.order_by("log_index")[:5]])
    _as_superuser(
        ("DELETE FROM portal_auditevent WHERE log_index >= 5", []),
        ("DELETE FROM portal_logwitnessreceipt WHERE checkpoint_id <> %s", [first.pk]),
        ("DELETE FROM portal_logcheckpoint WHERE tree_size > 5", []),
        ("UPDATE portal_logtile SET hashes = %s WHERE level = 0 AND tile_index = 0", [bytes(tiles.tiles[(0, 0)])]),
    )
    # The database alone now tells a consistent story, which is why checkpoints also leave it.
    assert verify_log(witness_paths=[]).problem is None
    code, err = _verify_audit(capsys)  # the configured witness directory
    assert code == 1
    assert "witnessed checkpoint" in err and "was witnessed at tree size 10 but the log now has only 5" in err
    code, err = _verify_audit(capsys, "--witness", str(log_witness_dir))
    assert code == 1 and "cut back" in err


def test_forgery_delete_the_tail_is_caught_by_the_stored_checkpoint(capsys):
    _approval_history()
    _as_superuser(("DELETE FROM portal_auditevent WHERE log_index >= 7", []))
    code, err = _verify_audit(capsys)
    assert code == 1 and "checkpoint 10: signs a tree of 10 events but the log has 7" in err


def test_forgery_rewrite_an_approval_and_recompute_every_later_hash(
    capsys, django_capture_on_commit_callbacks, tmp_path
):
    with django_capture_on_commit_callbacks(execute=True):
        approval = _approval_history()
    index = AuditEvent.objects.get(pk=approval.pk).log_index
    _as_superuser(
        ("UPDATE portal_auditevent SET reason = %s, actor_label = %s WHERE id = %s", ["routine", "carol", approval.pk])
    )
    _rebuild_tiles()  # every stored hash recomputed: only the signed checkpoints still hold the truth
    code, err = _verify_audit(capsys)
    assert code == 1
    assert "checkpoint 5: its signed root does not match the events: the log was rewritten" in err
    assert f"event #{approval.pk} (log index {index})" in err
    # Re-signing needs the log's key, which the database does not hold: a key of the attacker's own fails.
    forger = generate_signer("registrar.test/audit-log")
    statements = [("DELETE FROM portal_logwitnessreceipt", []), ("DELETE FROM portal_logcheckpoint", [])]
    for size in (5, 10):
        from portal.tlog.tiles import tree_root

        root = tree_root(size)
        statements.append(
            (
                "INSERT INTO portal_logcheckpoint (tree_size, root_hash, note, created_at) VALUES (%s, %s, %s, CURRENT_TIMESTAMP)",
                [size, root.hex(), sign_note(Checkpoint(forger.name, size, root).text, [forger])],
            )
        )
    _as_superuser(*statements)
    empty = tmp_path / "empty-witness"
    empty.mkdir()
    code, err = _verify_audit(capsys, "--witness", str(empty))
    assert code == 1 and "checkpoint 5: its signature does not verify with the log's keys" in err


def test_forgery_resigned_with_the_real_key_is_caught_by_the_witness(
    capsys, django_capture_on_commit_callbacks, log_witness_dir
):
    """An attacker on the app server holds the key too: the witness copy outside still disagrees."""
    from django.conf import settings as django_settings

    from portal.tlog.note import parse_signer_key
    from portal.tlog.tiles import tree_root

    with django_capture_on_commit_callbacks(execute=True):
        approval = _approval_history()
    _as_superuser(("UPDATE portal_auditevent SET reason = %s WHERE id = %s", ["routine", approval.pk]))
    _rebuild_tiles()
    signer = parse_signer_key(django_settings.REGISTRAR_LOG_SIGNING_KEY)
    statements = [("DELETE FROM portal_logwitnessreceipt", []), ("DELETE FROM portal_logcheckpoint", [])]
    for size in (5, 10):
        root = tree_root(size)
        statements.append(
            (
                "INSERT INTO portal_logcheckpoint (tree_size, root_hash, note, created_at) VALUES (%s, %s, %s, CURRENT_TIMESTAMP)",
                [size, root.hex(), sign_note(Checkpoint(signer.name, size, root).text, [signer])],
            )
        )
    _as_superuser(*statements)
    assert verify_log(witness_paths=[]).problem is None  # the database is consistent with itself again
    code, err = _verify_audit(capsys, "--witness", str(log_witness_dir))
    assert code == 1 and "witnessed checkpoint" in err and "its signed root does not match the events" in err


def test_verify_names_an_altered_event_from_its_stored_leaf(capsys):
    events = _append(5)
    log_seal()
    _as_superuser(("UPDATE portal_auditevent SET reason = %s WHERE id = %s", ["edited", events[2].id]))
    report = verify_log()
    assert (report.problem.event_id, report.problem.log_index) == (events[2].id, 2)
    code, err = _verify_audit(capsys)
    assert code == 1 and f"BROKEN at event #{events[2].id} (log index 2)" in err and "row altered" in err


def test_verify_detects_a_deleted_event():
    events = _append(4)
    log_seal()
    _as_superuser(("DELETE FROM portal_auditevent WHERE id = %s", [events[1].id]))
    problem = verify_log().problem
    assert problem.log_index == 1 and "was deleted" in problem.problem


def test_verify_reports_missing_triggers():
    _append(2)
    log_seal()
    trigger = disable_event_trigger()
    problem = verify_log().problem
    assert f"append-only triggers are missing or disabled: {trigger} on portal_auditevent" in str(problem)


def test_sequencer_refuses_to_extend_a_tree_its_checkpoint_does_not_vouch_for():
    _append(3)
    log_seal()
    _append(2)
    tile = LogTile.objects.get(level=0, tile_index=0)
    forged = bytes(tile.hashes[:32]) + b"\xff" * 32 + bytes(tile.hashes[64:])
    _as_superuser(("UPDATE portal_logtile SET hashes = %s WHERE id = %s", [forged, tile.pk]))
    with pytest.raises(LogStateError, match="do not reproduce the root of checkpoint 3"):
        log_seal()
    _as_superuser(
        ("UPDATE portal_logtile SET hashes = %s WHERE id = %s", [bytes(tile.hashes), tile.pk]),
        ("UPDATE portal_logcheckpoint SET root_hash = %s", ["ab" * 32]),
    )
    with pytest.raises(LogStateError, match="does not match its signed note"):
        log_seal()
    assert AuditEvent.objects.filter(log_index__isnull=True).count() == 2  # nothing was sealed


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_wait_and_all_land_in_the_log():
    errors = []

    def writer(tag):
        try:
            for i in range(15):
                audit_record(actor=Actor.system(tag), action="race", object_type="t", object_id=f"{tag}{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert log_seal().sealed == 60
    assert sorted(AuditEvent.objects.values_list("log_index", flat=True)) == list(range(60))
    assert verify_chain() == (60, None)


def test_seal_lag_is_the_age_of_the_oldest_waiting_event():
    assert seal_lag_seconds() == 0.0
    (event,) = _append(1)
    later = event.occurred_at + dt.timedelta(seconds=42)
    assert seal_lag_seconds(now=later) == pytest.approx(42.0)
    log_seal()
    assert seal_lag_seconds(now=later) == 0.0


def test_commit_nudges_the_sequencer_once_per_transaction(settings, monkeypatch):
    settings.REGISTRAR_LOG_NUDGE = True
    sent = []
    monkeypatch.setattr("portal.tlog.nudge.nudge_sequencer", lambda: sent.append(1))
    import portal.tlog.nudge as nudge

    with transaction.atomic():
        _append(3)
        audit_record_many([{"actor": Actor.system("s"), "action": "a", "object_type": "t", "object_id": 1}])
        registered = [f for _, f, _ in connection.run_on_commit if f is nudge.nudge_sequencer]
    assert len(registered) == 1  # one per transaction, however many events
    settings.REGISTRAR_LOG_NUDGE = False
    with transaction.atomic():
        log_appended()
        assert [f for _, f, _ in connection.run_on_commit if f is nudge.nudge_sequencer] == registered


def test_nudge_sends_from_a_thread_and_never_raises(monkeypatch):
    import portal.tlog.nudge as nudge

    calls = threading.Event()

    def send_task(name, **kwargs):
        assert name == "portal.tasks.log_sequence" and kwargs["retry"] is False
        calls.set()
        raise ConnectionError("broker down")  # a failure stays in the nudger's thread

    monkeypatch.setattr("portal.celery.app.send_task", send_task)
    nudge.nudge_sequencer()
    assert calls.wait(5)


def test_a_broker_outage_is_one_warning_without_a_stack_trace_and_one_when_it_is_back(caplog):
    """The fault suite's finding: with Redis down, every commit of every web process logged a stack trace."""
    import portal.tlog.nudge as nudge

    state = nudge._BrokerState()  # its own, so the process's nudger thread cannot add to it meanwhile
    with caplog.at_level("WARNING", logger="portal.tlog.nudge"):
        for _ in range(50):
            state.failure(ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."))
        state.success()
        state.success()

    records = [r for r in caplog.records if r.name == "portal.tlog.nudge"]
    assert [r.getMessage().split()[0] for r in records] == ["event=log_nudge_failed", "event=log_nudge_recovered"]
    assert all(r.exc_info is None for r in records)
    assert "Connection refused" in records[0].getMessage()
    assert "nudges_lost=50" in records[1].getMessage()


def test_a_failed_nudge_goes_to_the_broker_state_and_a_sent_one_too(monkeypatch):
    import portal.tlog.nudge as nudge

    seen = []

    class Recorder:
        def failure(self, exc):
            seen.append(("failure", str(exc)))

        def success(self):
            seen.append(("success", ""))

    monkeypatch.setattr(nudge, "_broker", Recorder())
    up = False

    def send_task(name, **kwargs):
        if not up:
            raise ConnectionError("broker down")

    monkeypatch.setattr("portal.celery.app.send_task", send_task)
    nudge.send()
    up = True
    nudge.send()
    # the process's nudger thread may send too; ours are there, in order
    assert ("failure", "broker down") in seen and ("success", "") in seen
    assert seen.index(("failure", "broker down")) < len(seen) - 1 - seen[::-1].index(("success", ""))


# --- the events of the old hash chain -------------------------------------------------------------------


def _legacy_chain(n: int) -> list[AuditEvent]:
    """Events as the hash chain wrote them before the log existed (ids, prev_hash, hash, the head)."""
    prev, rows = GENESIS_HASH, []
    for i in range(n):
        event = audit_event(
            actor=Actor.system("legacy"), action="legacy.event", object_type="t", object_id=i, after={"i": i}
        )
        event.id, event.prev_hash = i + 1, prev
        event.hash = compute_hash(event)
        rows.append(event)
        prev = event.hash
    AuditEvent.objects.bulk_create(rows)
    AuditHead.objects.update_or_create(id=1, defaults={"last_event_id": n, "last_hash": prev})
    set_event_id_sequence(n)
    return rows


def test_chained_events_move_into_the_log_in_order_and_their_chain_stays_verified():
    legacy = _legacy_chain(4)
    (new,) = _append(1)
    log_seal()
    assert list(AuditEvent.objects.order_by("log_index").values_list("id", flat=True)) == [1, 2, 3, 4, new.id]
    stored = AuditEvent.objects.get(pk=2)
    assert leaf_data(stored) == canonical_payload(stored)  # the leaf is the chain's own payload
    assert stored.hash == legacy[1].hash
    report = verify_log()
    assert report.problem is None and (report.events_verified, report.chained_events) == (5, 4)


def test_a_cut_tail_of_the_old_chain_is_still_detected():
    _legacy_chain(4)
    _as_superuser(("DELETE FROM portal_auditevent WHERE id = 4", []))
    log_seal()
    problem = verify_log().problem
    assert "chain head (event #4)" in str(problem) and "events were removed from the old chain" in str(problem)


def test_an_altered_chained_event_is_named():
    _legacy_chain(3)
    log_seal()
    _as_superuser(("UPDATE portal_auditevent SET hash = %s WHERE id = 2", ["f" * 64]))
    problem = verify_log().problem
    assert problem.event_id == 2 and "does not match its chain hash" in problem.problem


# --- canonical bytes ----------------------------------------------------------------------------------


def _reference_payload(event: AuditEvent, *, with_prev: bool = True) -> bytes:
    """The canonical payload as the chain has defined it from its first event: stored chains depend on it."""
    payload = {
        "id": event.id,
        "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": [event.actor_type, event.actor_id, event.actor_label],
        "action": event.action,
        "object": [event.object_type, event.object_id],
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "policy_version": event.policy_version,
        "request_id": event.request_id,
    }
    if with_prev:
        payload["prev_hash"] = event.prev_hash
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    after=st.none() | st.dictionaries(st.text(max_size=10), _json, max_size=4),
    before=st.none() | st.dictionaries(st.text(max_size=10), _json, max_size=4),
    text=st.text(max_size=30),
    event_id=st.integers(min_value=1, max_value=2**62),
    policy_version=st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_canonical_bytes_are_unchanged_byte_for_byte(after, before, text, event_id, policy_version):
    event = AuditEvent(
        id=event_id,
        occurred_at=dt.datetime(2026, 11, 28, 12, 0, 1, 250, tzinfo=dt.UTC),
        actor_type="user",
        actor_id=text[:5],
        actor_label=text,
        action="a." + text,
        object_type="thing",
        object_id=text[:64],
        before=before,
        after=after,
        reason=text,
        policy_version=policy_version,
        request_id=text[:64],
        prev_hash="ab" * 32,
    )
    assert canonical_payload(event) == leaf_data(event) == _reference_payload(event)
    event.prev_hash = ""
    assert leaf_data(event) == _reference_payload(event, with_prev=False)


def test_awkward_content_survives_the_database_round_trip():
    after = {"ünïcode": '日本語 "quoted" \\ back\\slash \u2028', "nested": {"z": [1, 2.5, None], "a": True}}
    first = audit_record(
        actor=Actor.system("é"), action="x", object_type="t", object_id="1", after=after, reason="line\nbreak"
    )
    expected = leaf_data(first)
    log_seal()
    assert leaf_data(AuditEvent.objects.get(pk=first.pk)) == expected
    assert verify_chain() == (1, None)


@pytest.mark.postgres_only  # event_insert is PostgreSQL's single-statement path
def test_event_insert_runs_the_change_first_and_appends_only_when_it_happened():
    event = audit_event(actor=Actor.system("t"), action="conditional", object_type="t", object_id="9")
    # the condition fails: nothing is appended
    sql, params = event_insert(
        connection,
        event,
        ctes=[("chg", "SELECT 1 AS n WHERE false", [])],
        when="EXISTS (SELECT 1 FROM chg)",
        returning=["(SELECT count(*) FROM chg)"],
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.fetchone() is None
    assert AuditEvent.objects.count() == 0
    # the condition holds: appended, and the caller's RETURNING comes back too
    sql, params = event_insert(
        connection,
        event,
        ctes=[("chg", "SELECT %s::int AS n", [7])],
        when="EXISTS (SELECT 1 FROM chg)",
        returning=["(SELECT n FROM chg)"],
    )
    assert "portal_audithead" not in sql
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    event_inserted(event, row, using=connection.alias)
    assert row[1] == 7 and AuditEvent.objects.get().pk == event.id
    log_seal()
    assert verify_chain() == (1, None)


@pytest.mark.parametrize(
    "occurred_at",
    [
        dt.datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(1999, 7, 1, 0, 0, 0, 10, tzinfo=dt.timezone(dt.timedelta(hours=-9, minutes=-30))),
    ],
)
def test_the_database_formats_timestamps_exactly_as_the_entry_does(occurred_at):
    event = audit_event(actor=Actor.system("t"), action="x", object_type="t", object_id=1)
    event.occurred_at = occurred_at
    from portal.audit import audit_append

    audit_append(event)
    log_seal()
    from portal.tlog.entries import iter_entries

    [(_, _, _, _, entry)] = list(iter_entries())
    assert entry == leaf_data(event) == leaf_data(AuditEvent.objects.get(pk=event.pk))


def _entry_of(event) -> bytes:
    return leaf_data(AuditEvent.objects.get(pk=event.pk))


def test_an_event_of_many_small_values_is_bounded_by_its_smallest_sufficient_container():
    # no single string is worth a digest: the smallest object or array whose digest makes the entry fit goes
    after = {"hosts": [f"h{i:05d}.example" for i in range(3000)], "tags": ["t"] * 5000, "name": "kept"}
    event = audit_record(actor=Actor.system("t"), action="x", object_type="t", object_id=1, after=after)
    stored = AuditEvent.objects.get(pk=event.pk)
    # hosts (48 KB) and tags (20 KB) both suffice: tags, the smaller, is the one replaced
    assert stored.after["name"] == "kept" and stored.after["hosts"] == after["hosts"]
    assert stored.after["tags"]["$omitted"]["bytes"] == len(json.dumps(after["tags"], separators=(",", ":")))
    assert len(_entry_of(event)) <= 0xFFFF


def test_a_huge_reason_is_cut_last_and_says_so():
    event = audit_record(
        actor=Actor.system("t"), action="x", object_type="t", object_id=1, after={"a": 1}, reason="é" * 40_000
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.after == {"a": 1}
    assert stored.reason.startswith("é" * 1000) and "[cut: 40000 characters, sha256 " in stored.reason
    assert 0xFFFF - 100 < len(_entry_of(event)) <= 0xFFFF


def test_bulk_appended_events_are_bounded_too_and_small_ones_untouched():
    rows = audit_record_many(
        [
            {
                "actor": Actor.system("s"),
                "action": "a",
                "object_type": "t",
                "object_id": 1,
                "after": {"x": "y" * 70_000},
            },
            {
                "actor": Actor.system("s"),
                "action": "a",
                "object_type": "t",
                "object_id": 2,
                "after": {"x": "y" * 60_000},
            },
        ]
    )
    big, small = (AuditEvent.objects.get(pk=r.pk) for r in rows)
    assert set(big.after["x"]) == {"$omitted"} and small.after == {"x": "y" * 60_000}
    log_seal()
    assert verify_chain() == (2, None)


@settings(max_examples=200, deadline=None)
@given(
    after=st.none() | _json,
    before=st.none() | st.dictionaries(st.text(max_size=10), _json, max_size=4),
    text=st.text(max_size=30),
    event_id=st.integers(min_value=1, max_value=2**62),
    policy_version=st.none() | st.integers(min_value=0, max_value=10**6),
    prev_hash=st.sampled_from(["", "ab" * 32]),
    spaced=st.booleans(),
)
def test_entries_written_out_for_speed_agree_with_entry_bytes(
    after, before, text, event_id, policy_version, prev_hash, spaced
):
    from portal.audit import entry_bytes
    from portal.tlog.entries import rows_entries

    occurred = "2026-11-28T12:00:01.000250+00:00"  # as PostgreSQL formats it (OCCURRED_AT_SQL)
    dumps = (lambda v: json.dumps(v, indent=1) + "\n") if spaced else json.dumps  # whatever the JSON's layout
    values = (event_id, occurred, "user", text[:5], text, "a." + text, "thing", text[:64])
    row = (
        *values,
        None if before is None else dumps(before),
        None if after is None else dumps(after),
        text,
        policy_version,
        text[:64],
        prev_hash,
        None,
        0,
    )
    expected = entry_bytes(*values, before, after, text, policy_version, text[:64], prev_hash or None)
    assert rows_entries([row], "postgresql") == [expected]


@pytest.mark.django_db(transaction=True)
def test_verify_outside_a_transaction_reads_ahead_on_its_own_connection(monkeypatch):
    from portal.tlog import entries

    calls = []
    prefetched = entries._prefetched
    monkeypatch.setattr(entries, "_prefetched", lambda *a: calls.append(a) or prefetched(*a))
    events = _append(600)
    assert log_seal(batch_size=250).checkpoints == [250, 500, 600]
    report = verify_log(batch_size=128)  # checkpoints and tile ends fall inside batches
    assert report.problem is None and (report.events_verified, report.checkpoints_verified) == (600, 3)
    assert len(calls) == 1
    _as_superuser(("UPDATE portal_auditevent SET reason = %s WHERE id = %s", ["edited", events[300].id]))
    problem = verify_log(batch_size=128).problem
    assert (problem.event_id, problem.log_index) == (events[300].id, 300) and "row altered" in problem.problem
    _as_superuser(("DELETE FROM portal_auditevent WHERE log_index >= 200", []))
    problem = verify_log(batch_size=128).problem
    assert problem.subject == "checkpoint 250" and "the log has 200" in problem.problem


def _index(events, first: int) -> None:
    """Give events log indexes from ``first`` as a bulk load does (seed_scale's COPY), bypassing the sequencer."""
    for offset, event in enumerate(events):
        AuditEvent.objects.filter(pk=event.pk).update(log_index=first + offset)


def test_preindexed_events_seal_into_the_same_tree_the_sequencer_would_build():
    events = _append(3)
    log_seal()
    loaded = _append(5)
    _index(loaded, 3)
    report = log_seal_preindexed(batch_size=2)
    assert (report.sealed, report.tree_size, report.checkpoints) == (5, 8, [5, 7, 8])
    tree = merkle.CompactTree()
    for event in events + loaded:
        tree.append(merkle.leaf_hash(leaf_data(AuditEvent.objects.get(pk=event.pk))))
    assert LogCheckpoint.objects.get(tree_size=8).root_hash == tree.root().hex()
    assert verify_chain() == (8, None)
    assert log_seal_preindexed().sealed == 0 and log_seal().sealed == 0
    _append(2)
    assert log_seal().tree_size == 10  # the sequencer carries on from the loaded tree


@pytest.mark.parametrize("indexes", [[3, 5], [4, 3]], ids=["a gap", "not in id order"])
def test_preindexed_events_that_do_not_continue_the_tree_are_refused(indexes):
    _append(3)
    log_seal()
    loaded = _append(2)
    for event, index in zip(loaded, indexes, strict=True):
        AuditEvent.objects.filter(pk=event.pk).update(log_index=index)
    with pytest.raises(LogStateError, match="do not continue the tree in id order"):
        log_seal_preindexed()
    assert list(LogCheckpoint.objects.values_list("tree_size", flat=True)) == [3]  # nothing was signed
