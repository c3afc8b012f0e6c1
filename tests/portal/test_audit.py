"""The audit chain: append, verify, tamper detection, and the database refusing changes."""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from portal.audit import GENESIS_HASH, Actor, audit_record, audit_record_many, compute_hash, verify_chain
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
