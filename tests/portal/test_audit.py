"""The audit chain: append, verify, tamper detection, and the database refusing changes."""

from __future__ import annotations

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
    chained,
    chained_insert,
    compute_hash,
    verify_chain,
)
from portal.models import AuditEvent, AuditHead

pytestmark = pytest.mark.django_db


def _append(n: int, actor=None):
    actor = actor or Actor.system("test")
    return [audit_record(actor=actor, action="test.event", object_type="thing", object_id=i, after={"i": i})
            for i in range(n)]


def test_events_chain_to_each_other_and_head_tracks_last():
    first, second, third = _append(3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert [first.id, second.id, third.id] == [1, 2, 3]
    assert compute_hash(AuditEvent.objects.get(pk=2)) == second.hash
    head = AuditHead.objects.get()
    assert (head.last_event_id, head.last_hash) == (3, third.hash)
    assert verify_chain() == (3, None)


def test_bulk_append_continues_the_chain():
    (first,) = _append(1)
    rows = audit_record_many([
        {"actor": Actor.system("sweep"), "action": "client.expired", "object_type": "client", "object_id": f"c{i}"}
        for i in range(5)
    ])
    assert rows[0].prev_hash == first.hash
    assert verify_chain() == (6, None)


def test_secrets_are_censored_before_hashing():
    event = audit_record(actor=Actor.system("t"), action="x", object_type="t", object_id=1,
                         after={"registration_access_token": "abc", "nested": {"client_secret": "s"}, "name": "n"})
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.after == {"registration_access_token": "********", "nested": {"client_secret": "********"},
                            "name": "n"}


def test_database_refuses_update_and_delete():
    (event,) = _append(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


def _tamper(sql: str, params):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER audit_immutable")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER audit_immutable")


def test_verify_audit_names_the_first_altered_event(capsys):
    events = _append(5)
    call_command("verify_audit")
    assert "intact: 5 events" in capsys.readouterr().out
    _tamper("UPDATE portal_auditevent SET reason = %s WHERE id = %s", ["edited", events[2].id])
    checked, broken = verify_chain()
    assert broken.event_id == events[2].id and checked == 2
    with pytest.raises(SystemExit) as exc:
        call_command("verify_audit")
    assert exc.value.code == 1
    assert f"BROKEN at event {events[2].id}" in capsys.readouterr().err


def test_verify_detects_a_deleted_event():
    events = _append(4)
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[1].id])
    _, broken = verify_chain()
    assert broken.event_id == events[1].id


def test_verify_detects_truncated_tail():
    events = _append(3)
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[2].id])
    _, broken = verify_chain()
    assert broken is not None and "head" in broken.problem


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_fork_the_chain():
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
    assert AuditEvent.objects.count() == 60
    assert AuditEvent.objects.values("prev_hash").distinct().count() == 60
    assert verify_chain() == (60, None)


def _reference_payload(event: AuditEvent) -> bytes:
    """The canonical payload as the chain has defined it from its first event: stored chains depend on it."""
    import datetime as dt
    import json

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
        "prev_hash": event.prev_hash,
    }
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
def test_canonical_payload_is_unchanged_byte_for_byte(after, before, text, event_id, policy_version):
    import datetime as dt

    event = AuditEvent(
        id=event_id, occurred_at=dt.datetime(2026, 11, 28, 12, 0, 1, 250, tzinfo=dt.UTC),
        actor_type="user", actor_id=text[:5], actor_label=text, action="a." + text, object_type="thing",
        object_id=text[:64], before=before, after=after, reason=text, policy_version=policy_version,
        request_id=text[:64], prev_hash="ab" * 32,
    )  # fmt: skip
    assert canonical_payload(event) == _reference_payload(event)


def test_single_statement_append_hashes_like_python_even_for_awkward_content():
    after = {"ünïcode": "日本語 \"quoted\" \\ back\\slash \u2028", "nested": {"z": [1, 2.5, None], "a": True}}
    first = audit_record(actor=Actor.system("é"), action="x", object_type="t",
                         object_id="1", after=after, reason="line\nbreak")  # fmt: skip
    stored = AuditEvent.objects.get(pk=first.pk)
    assert stored.hash == first.hash == compute_hash(stored)
    assert verify_chain() == (1, None)


def test_chained_insert_runs_the_change_first_and_appends_only_when_it_happened():
    (first,) = _append(1)
    head_before = AuditHead.objects.values_list("last_event_id", "last_hash").get()
    event = audit_event(actor=Actor.system("t"), action="conditional", object_type="t", object_id="9")

    # the condition fails: nothing is appended, the head does not move
    sql, params = chained_insert(connection, event, ctes=[("chg", "SELECT 1 AS n WHERE false", [])],
                                 when="EXISTS (SELECT 1 FROM chg)", returning=["(SELECT count(*) FROM chg)"])  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.fetchone() is None
    assert AuditHead.objects.values_list("last_event_id", "last_hash").get() == head_before
    assert AuditEvent.objects.count() == 1

    # the condition holds: appended after the first event, and the caller's RETURNING comes back too
    sql, params = chained_insert(connection, event, ctes=[("chg", "SELECT %s::int AS n", [7])],
                                 when="EXISTS (SELECT 1 FROM chg)", returning=["(SELECT n FROM chg)"])  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    chained(event, row, using=connection.alias)
    assert (event.id, event.prev_hash, row[3]) == (first.id + 1, first.hash, 7)
    assert AuditHead.objects.values_list("last_event_id", "last_hash", "prev_hash").get() == (
        event.id, event.hash, first.hash
    )
    assert verify_chain() == (2, None)
