"""Refused credentials are counted per source and minute on the request path and folded into the audit chain
later (approvals.unauthorized): the chain holds decisions, not one event per piece of garbage."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import UnauthorizedTally
from approvals.unauthorized import (
    OVERFLOW_SHARDS,
    PREFIXES_PER_SOURCE,
    unauthorized_count,
    unauthorized_fold,
)
from portal.audit import verify_chain
from portal.models import AuditEvent, AuditHead
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    fold_refusals,
    low_body,
    make_token,
    post,
    refusals_counted,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(catalogue, idp, owner):
    return owner


def head() -> tuple[int, str] | None:
    row = AuditHead.objects.filter(id=1).values_list("last_event_id", "last_hash").first()
    return tuple(row) if row else None


def count(source: str, prefix: str = "rat_garbage_", *, now=None, action="registration.unauthorized"):
    unauthorized_count(
        action=action,
        source=source,
        credential_prefix=prefix,
        path="/oauth2/register",
        error="invalid_token",
        reason="the bearer token is not a valid initial access token",
        now=now,
    )


def test_many_401s_from_one_source_chain_nothing_then_fold_into_one_event_with_the_count(client, setup):
    head_before, events_before = head(), AuditEvent.objects.count()

    for _ in range(7):
        response = post(client, low_body(), "rat_not_a_real_token", REMOTE_ADDR="203.0.113.9")
        assert response.status_code == 401

    # The request path appended nothing and did not move the chain's head.
    assert AuditEvent.objects.count() == events_before and head() == head_before
    [tally] = UnauthorizedTally.objects.all()
    assert (tally.source, tally.credential_prefix, tally.count) == ("203.0.113.9", "rat_not_a_re", 7)

    [event] = fold_refusals()
    assert event.action == "registration.unauthorized"
    assert event.actor_label == "unauthenticated 203.0.113.9"
    assert event.object_type == "registration_endpoint" and event.object_id == "/oauth2/register"
    assert event.after["count"] == 7 and event.after["source_ip"] == "203.0.113.9"
    assert event.after["credential_prefix"] == "rat_not_a_re" and event.after["other_sources"] is False
    assert "not a valid initial access token" in event.reason
    assert not UnauthorizedTally.objects.exists()
    assert verify_chain()[1] is None
    assert fold_refusals() == []  # folded once: a second run finds nothing


def test_the_401_path_is_two_queries_and_never_touches_the_audit_chain(client, setup, django_assert_num_queries):
    post(client, low_body(), "rat_not_a_real_token")  # warm caches (policy, catalogue) outside the count
    with CaptureQueriesContext(connection) as queries:
        assert post(client, low_body(), "rat_not_a_real_token").status_code == 401
    sql = [q["sql"] for q in queries.captured_queries]
    assert len(sql) == 2, sql  # the token look-up and the tally upsert
    assert "approvals_unauthorizedtally" in sql[1] and "ON CONFLICT" in sql[1]
    assert not any("portal_audit" in statement for statement in sql)


def test_the_rfc_7592_401_path_is_counted_too(client, setup):
    before = AuditEvent.objects.count()
    for method in ("get", "put", "delete"):
        response = getattr(client, method)("/oauth2/register/reg_unknown", HTTP_AUTHORIZATION="Bearer rrat_guess")
        assert response.status_code == 401
    assert AuditEvent.objects.count() == before and refusals_counted() == 3
    [event] = fold_refusals()
    assert event.after["count"] == 3 and event.after["path"] == "/oauth2/register/reg_unknown"


def test_each_source_prefix_and_action_gets_its_own_event(db):
    now = timezone.now()
    for source, prefix, action in [
        ("198.51.100.1", "rat_aaaaaaaa", "registration.unauthorized"),
        ("198.51.100.1", "rat_aaaaaaaa", "registration.unauthorized"),
        ("198.51.100.1", "rat_bbbbbbbb", "registration.unauthorized"),
        ("198.51.100.2", "rat_aaaaaaaa", "registration.unauthorized"),
        ("198.51.100.2", "", "registration.statement_rejected"),
    ]:
        count(source, prefix, now=now, action=action)
    unauthorized_fold(now=now + timedelta(minutes=2))
    got = sorted(
        (e.after["source_ip"], e.after["credential_prefix"], e.action, e.after["count"])
        for e in AuditEvent.objects.filter(action__startswith="registration.")
    )
    assert got == [
        ("198.51.100.1", "rat_aaaaaaaa", "registration.unauthorized", 2),
        ("198.51.100.1", "rat_bbbbbbbb", "registration.unauthorized", 1),
        ("198.51.100.2", "", "registration.statement_rejected", 1),
        ("198.51.100.2", "rat_aaaaaaaa", "registration.unauthorized", 1),
    ]


def test_each_minute_of_a_source_is_its_own_event(db):
    start = timezone.now().replace(second=30, microsecond=0)
    for offset in (0, 10, 61, 62):
        count("198.51.100.7", now=start + timedelta(seconds=offset))
    unauthorized_fold(now=start + timedelta(minutes=3))
    assert sorted(e.after["count"] for e in AuditEvent.objects.all()) == [2, 2]


def test_the_fold_leaves_minutes_that_are_open_or_within_the_grace(db):
    now = timezone.now().replace(second=10, microsecond=0)
    count("198.51.100.3", now=now - timedelta(minutes=1))  # the previous minute: closed 10 s ago, within the grace
    count("198.51.100.3", now=now)  # the current minute
    assert unauthorized_fold(now=now) == 0
    assert UnauthorizedTally.objects.count() == 2
    assert unauthorized_fold(now=now + timedelta(minutes=1)) == 1  # the previous minute is now over a minute old
    assert unauthorized_fold(now=now + timedelta(minutes=2)) == 1
    assert not UnauthorizedTally.objects.exists()


def test_a_flood_of_distinct_sources_is_bounded_and_every_request_is_counted(db, settings):
    settings.REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE = 5
    now = timezone.now()
    for n in range(200):
        count(f"10.0.{n // 250}.{n % 250}", f"rat_{n:08d}", now=now)
    rows = UnauthorizedTally.objects.count()
    assert rows <= 5 + OVERFLOW_SHARDS  # five named sources, the rest in the "other sources" shards
    assert refusals_counted() == 200

    unauthorized_fold(now=now + timedelta(minutes=2))
    events = list(AuditEvent.objects.all())
    assert len(events) == 6  # five named sources + one "other sources" event
    assert sum(e.after["count"] for e in events) == 200
    [other] = [e for e in events if e.after["other_sources"]]
    assert other.after["count"] == 195 and other.after["source_ip"] is None
    assert other.actor_label == "unauthenticated (other sources)"


def test_a_source_cycling_credentials_cannot_crowd_out_other_sources(db, settings):
    settings.REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE = 10
    now = timezone.now()
    for n in range(50):
        count("192.0.2.66", f"rat_{n:08d}", now=now)
    count("192.0.2.77", "rat_honest__", now=now)
    mine = UnauthorizedTally.objects.filter(source="192.0.2.66")
    assert mine.count() == PREFIXES_PER_SOURCE + 1  # its own prefixes, then one "other credentials" row
    assert mine.get(credential_prefix="*").count == 50 - PREFIXES_PER_SOURCE
    assert UnauthorizedTally.objects.get(source="192.0.2.77").credential_prefix == "rat_honest__"


def test_a_known_key_keeps_counting_in_its_own_row_after_the_minute_fills(db, settings):
    settings.REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE = 2
    now = timezone.now()
    count("192.0.2.1", now=now)
    count("192.0.2.2", now=now)
    count("192.0.2.3", now=now)  # the minute is full: "other sources"
    count("192.0.2.1", now=now)  # already has a row: still its own
    assert UnauthorizedTally.objects.get(source="192.0.2.1").count == 2
    assert UnauthorizedTally.objects.filter(source__startswith="*").get().count == 1


def test_unknown_actions_are_refused_and_write_nothing(db):
    with pytest.raises(ValueError, match="unknown action"):
        unauthorized_count(
            action="client.create", source="192.0.2.1", credential_prefix="", path="/", error="", reason=""
        )
    assert not UnauthorizedTally.objects.exists()


@pytest.mark.postgres_only  # SKIP LOCKED; SQLite has no row locks (a second fold waits, then finds nothing)
@pytest.mark.django_db(transaction=True)
def test_a_minute_another_fold_holds_is_skipped_not_folded_twice():
    old = timezone.now() - timedelta(minutes=5)
    count("192.0.2.9", now=old)
    locked, release = threading.Event(), threading.Event()

    def other_fold():
        try:
            with transaction.atomic():
                list(UnauthorizedTally.objects.select_for_update())
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    worker = threading.Thread(target=other_fold)
    worker.start()
    try:
        assert locked.wait(10)
        assert unauthorized_fold() == 0 and not AuditEvent.objects.exists()
    finally:
        release.set()
        worker.join()
    assert unauthorized_fold() == 1 and AuditEvent.objects.count() == 1


def test_sweep_command_and_beat_task_fold(db):
    from approvals.tasks import fold_unauthorized
    from portal.celery import app

    assert app.conf.beat_schedule["fold-unauthorized"]["task"] == "approvals.tasks.fold_unauthorized"
    old = timezone.now() - timedelta(minutes=5)
    count("192.0.2.10", now=old)
    assert fold_unauthorized() == 1
    count("192.0.2.11", now=old)
    call_command("sweep", "unauthorized")
    assert AuditEvent.objects.filter(action="registration.unauthorized").count() == 2
    assert not UnauthorizedTally.objects.exists()
