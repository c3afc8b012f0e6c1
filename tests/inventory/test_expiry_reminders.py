"""Expiry reminders relative to the client's lifetime, one digest per owner per day (time travel)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.test import override_settings

from inventory import notifications
from inventory.choices import ClientState
from inventory.models import Client, OwnerDigest
from tests.factories import ClientFactory, UserFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("reminder_settings"),
]
DAY0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)  # a Monday, midnight UTC


@pytest.fixture
def reminder_settings():
    with override_settings(REGISTRAR_EXPIRY_REMINDER_PERCENT=20, REGISTRAR_EXPIRY_REMINDER_HOURS=24):
        yield


def at(hours: float) -> dt.datetime:
    return DAY0 + dt.timedelta(hours=hours)


def client_living(owner, *, start: float, hours: float, ceiling: bool = True, **kwargs) -> Client:
    """A client activated at ``at(start)`` that lives ``hours``."""
    return ClientFactory(
        owner=owner,
        activated_at=at(start),
        expires_at=at(start + hours),
        ceiling_ttl_seconds=int(hours * 3600) if ceiling else None,
        **kwargs,
    )


def run(hours: float) -> int:
    return notifications.notify_expiring(now=at(hours))


def listed(message) -> int:
    return message.body.count("•")


@pytest.mark.parametrize(
    "hours,ceiling,lead_hours",
    [
        (24, True, 4.8),  # a day-long client: at 20 % left
        (72, True, 14.4),
        (24 * 90, True, 24),  # long-lived: a day before (later than 18 days before)
        (24 * 5, True, 24),  # the crossover
        (48, False, 9.6),  # no approved lifetime on record: activation to expiry
    ],
)
def test_reminder_lead_is_the_later_of_20_percent_left_and_a_day_before(hours, ceiling, lead_hours):
    client = client_living(UserFactory(), start=0, hours=hours, ceiling=ceiling)
    assert notifications.reminder_lead(client) == dt.timedelta(hours=lead_hours)


def test_a_short_lived_client_is_reminded_near_its_end_not_at_birth_and_only_once():
    olivia = UserFactory(username="olivia", email="olivia@example.com")
    short = client_living(olivia, start=8, hours=24)  # ends Tue 08:00, reminder Tue 03:12
    week = client_living(olivia, start=0, hours=24 * 7)  # ends next Mon 00:00, reminder Sun 00:00
    # The old rule mailed both at once ("expiring within 7 days"); now nothing is due on day 0.
    assert [run(h) for h in (9, 15, 23)] == [0, 0, 0]
    assert mail.outbox == []
    # Tuesday 03:00: not yet (03:12); 04:00: due, one digest.
    assert run(24 + 3) == 0
    assert run(24 + 4) == 1
    assert len(mail.outbox) == 1 and short.registration_id in mail.outbox[0].body and listed(mail.outbox[0]) == 1
    assert Client.objects.get(pk=short.pk).expiry_reminded_for == short.expires_at
    # Running again (a retry, a second beat) sends nothing, today or tomorrow.
    assert (run(24 + 4), run(24 + 5), run(48 + 1)) == (0, 0, 0)
    assert len(mail.outbox) == 1 and OwnerDigest.objects.count() == 1
    # The week-long client: Sunday at its reminder moment, a day before it ends.
    assert run(24 * 6 - 1) == 0
    assert run(24 * 6) == 1
    assert week.registration_id in mail.outbox[1].body and listed(mail.outbox[1]) == 1


def test_one_digest_per_owner_per_day_lists_everything_due_before_the_day_ends():
    dave = UserFactory(username="dave", email="dave@example.com")
    erin = UserFactory(username="erin", email="erin@example.com")
    due_now = client_living(dave, start=0, hours=10)  # reminder at 08:00
    due_tonight = client_living(dave, start=-24 * 9, hours=24 * 10 + 20)  # ends Tue 20:00, reminder Mon 20:00
    due_tomorrow = client_living(dave, start=0, hours=24 * 3)  # 14.4 h before its end: Wed 09:36
    client_living(erin, start=-100, hours=147.5)  # ends Tue 23:30, reminder Mon 23:30: erin's digest waits
    ClientFactory(owner=dave, state=ClientState.SUSPENDED, expires_at=at(9), activated_at=at(0))
    ClientFactory(owner=UserFactory(is_active=False, email="gone@example.com"), expires_at=at(9), activated_at=at(0))

    assert run(8) == 1  # dave only; erin has nothing due yet
    assert [m.to for m in mail.outbox] == [["dave@example.com"]]
    body = mail.outbox[0].body
    assert due_now.registration_id in body and due_tonight.registration_id in body
    assert due_tomorrow.registration_id not in body and listed(mail.outbox[0]) == 2
    assert run(23) == 0  # erin: 23:30 not reached
    assert run(23.5) == 1 and mail.outbox[1].to == ["erin@example.com"]
    assert run(48 + 9) == 0  # Wednesday 09:00: not yet
    assert run(48 + 10) == 1 and due_tomorrow.registration_id in mail.outbox[2].body
    assert OwnerDigest.objects.filter(kind="expiry").count() == 3


def test_a_client_due_after_todays_digest_waits_for_tomorrows_and_a_renewal_makes_a_new_reminder_due():
    frank = UserFactory(username="frank", email="frank@example.com")
    first = client_living(frank, start=0, hours=10)
    assert run(8) == 1
    late = client_living(frank, start=12, hours=24)  # created after today's digest; reminder Tue 07:12
    assert run(13) == 0  # today's digest is gone; nothing due anyway
    assert run(24 + 7.5) == 1 and late.registration_id in mail.outbox[1].body
    assert first.registration_id not in mail.outbox[1].body  # ended, and reminded already
    # The owner renews the late one for another day: its next reminder is due for the new expiry.
    Client.objects.filter(pk=late.pk).update(expires_at=at(12 + 48))
    assert run(24 + 8) == 0  # same day: one digest per owner per day
    assert run(48 + 7.5) == 1 and late.registration_id in mail.outbox[2].body


def test_an_owner_without_email_gets_nothing_and_nothing_is_marked():
    quiet = UserFactory(username="quiet", email="")
    client = client_living(quiet, start=0, hours=10)
    assert run(9) == 0
    assert mail.outbox == [] and Client.objects.get(pk=client.pk).expiry_reminded_for is None
