"""The admins' sync-failures page and its Retry button."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.models import OutboxEntry
from portal.audit import events_for
from tests.factories import ClientFactory, IdPFactory

pytestmark = pytest.mark.django_db
URL = "/inventory/sync-failures/"


def dead_entry(idp, n: int, **client_fields) -> OutboxEntry:
    client = ClientFactory(idp=idp, sync_failed=True, name=f"agent-{n}", **client_fields)
    return OutboxEntry.objects.create(
        client=client,
        idp=idp,
        operation=OutboxOperation.DELETE,
        status=OutboxStatus.DEAD,
        attempts=8,
        next_attempt_at=client.created_at,
        last_error="BadRequest: rfc7591: DELETE answered 400 detail={'error': 'nope super-secret-iat'}",
    )


@pytest.fixture
def secret_idp(db):
    return IdPFactory(name="secret-idp", secrets={"initial_access_token": "super-secret-iat"})


def test_only_admins_see_the_page(client, security_user, owner):
    assert client.get(URL).status_code == 302
    for user in (security_user, owner):
        client.force_login(user)
        assert client.get(URL).status_code == 403


def test_lists_dead_entries_with_censored_errors(client, admin_user, secret_idp):
    entry = dead_entry(secret_idp, 1)
    OutboxEntry.objects.create(
        client=entry.client, idp=secret_idp, operation=OutboxOperation.UPDATE, next_attempt_at=entry.next_attempt_at
    )  # pending: not listed
    client.force_login(admin_user)

    response = client.get(URL)

    body = response.content.decode()
    assert response.status_code == 200
    assert "agent-1" in body and entry.client.registration_id in body
    assert "super-secret-iat" not in body and "********" in body
    assert [row["entry"].pk for row in response.context["rows"]] == [entry.pk]
    assert f'action="/inventory/sync-failures/{entry.pk}/retry/"' in body and "data-confirm=" in body
    assert "csrfmiddlewaretoken" in body


def test_empty_state(client, admin_user):
    client.force_login(admin_user)
    assert "Nothing failed" in client.get(URL).content.decode()


@pytest.mark.parametrize("count", [3, 30])
def test_query_count_does_not_grow_with_rows(client, admin_user, secret_idp, django_assert_max_num_queries, count):
    other_idp = IdPFactory(name="other-idp")
    for n in range(count):
        dead_entry(secret_idp if n % 2 else other_idp, n)
    client.force_login(admin_user)
    client.get(URL)  # warm the session/user caches
    with django_assert_max_num_queries(8):
        response = client.get(URL)
    assert len(response.context["rows"]) == count


def test_retry_requeues_the_entry_and_audits(client, admin_user, secret_idp, django_capture_on_commit_callbacks):
    entry = dead_entry(secret_idp, 1)
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("inventory:outbox_retry", args=[entry.pk]))

    assert response.status_code == 302 and response.url == URL
    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 0)
    assert events_for("client", entry.client.registration_id).filter(action="outbox.retry").count() == 1
    follow = client.get(URL)
    assert "queued for delivery" in follow.content.decode()


def test_retry_of_a_delivered_entry_is_refused_and_changes_nothing(client, admin_user, secret_idp):
    entry = dead_entry(secret_idp, 1)
    OutboxEntry.objects.filter(pk=entry.pk).update(status=OutboxStatus.DONE)
    client.force_login(admin_user)

    response = client.post(reverse("inventory:outbox_retry", args=[entry.pk]), follow=True)

    entry.refresh_from_db()
    assert entry.status == OutboxStatus.DONE and entry.attempts == 8
    assert "not dead" in response.content.decode()
    assert not events_for("client", entry.client.registration_id).filter(action="outbox.retry").exists()


def test_retry_needs_admin_and_post(client, owner, admin_user, secret_idp):
    entry = dead_entry(secret_idp, 1, state=ClientState.ACTIVE)
    url = reverse("inventory:outbox_retry", args=[entry.pk])
    client.force_login(owner)
    assert client.post(url).status_code == 403
    client.force_login(admin_user)
    assert client.get(url).status_code == 405
    entry.refresh_from_db()
    assert entry.status == OutboxStatus.DEAD


def test_retry_requires_csrf(admin_user, secret_idp):
    from django.test import Client as HttpClient

    entry = dead_entry(secret_idp, 1)
    browser = HttpClient(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    assert browser.post(reverse("inventory:outbox_retry", args=[entry.pk])).status_code == 403
    entry.refresh_from_db()
    assert entry.status == OutboxStatus.DEAD
