"""An owner leaving orphans a client only when no active co-sponsor is left (inventory.lifecycle_policies.succession)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from unittest import mock

import pytest
from django.contrib.admin.sites import site
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from inventory.choices import ClientState
from inventory.models import Client, ClientSponsor, SponsorState, TransferOffer, TransferState
from inventory.sweeps import sweep_orphans
from portal.audit import verify_chain
from portal.models import AuditEvent, User
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)
TOKEN = "scim-test-token-0123456789"


@pytest.fixture(autouse=True)
def sent_tasks():
    with mock.patch("portal.celery.app.send_task") as send:
        yield send


def sponsor(client, user, *, accepted_days_ago=10, state=SponsorState.ACTIVE):
    return ClientSponsor.objects.create(
        client=client, user=user, state=state, decided_at=NOW - dt.timedelta(days=accepted_days_ago)
    )


def deactivate_in_admin(admin_user, rf, *users):
    from inventory.admin import deactivate_users

    request = rf.post("/admin/portal/user/")
    request.user, request.session = admin_user, {}
    request._messages = FallbackStorage(request)
    deactivate_users(site._registry[User], request, User.objects.filter(pk__in=[u.pk for u in users]))


@override_settings(REGISTRAR_ORPHAN_GRACE_HOURS=72)
def test_leaver_in_admin_hands_clients_to_the_longest_standing_cosponsor_and_orphans_the_rest(admin_user, rf):
    team = TeamFactory(notify_email="team@example.com")
    leaver = UserFactory(username="leaver", email="leaver@example.com")
    bea = UserFactory(username="bea", email="bea@example.com")
    carl = UserFactory(username="carl", email="carl@example.com")
    gone = UserFactory(username="gone", is_active=False)
    shared = ClientFactory(owner=leaver, team=team, risk_tier="high")
    sponsor(shared, carl, accepted_days_ago=3)
    bea_sponsorship = sponsor(shared, bea, accepted_days_ago=20)  # accepted first: she succeeds
    alone = ClientFactory(owner=leaver, team=team)
    invited_only = ClientFactory(owner=leaver, team=team)
    sponsor(invited_only, bea, state=SponsorState.PENDING)  # an invitation does not count
    inactive_sponsor = ClientFactory(owner=leaver, team=team)
    sponsor(inactive_sponsor, gone)  # nor does a sponsor who left too
    offer = TransferOffer.objects.create(client=shared, from_user=leaver, to_user=carl, offered_by=leaver)

    deactivate_in_admin(admin_user, rf, leaver)
    result = sweep_orphans(now=NOW)

    assert result.counts == {"succeeded": 1, "orphaned": 3}
    shared.refresh_from_db()
    assert (shared.owner_id, shared.orphaned_at, shared.state) == (bea.pk, None, ClientState.ACTIVE)
    assert ClientSponsor.objects.get(pk=bea_sponsorship.pk).state == SponsorState.REMOVED  # she is the owner now
    assert ClientSponsor.objects.get(client=shared, user=carl).state == SponsorState.ACTIVE
    assert TransferOffer.objects.get(pk=offer.pk).state == TransferState.CANCELLED
    assert set(Client.objects.filter(orphaned_at=NOW).values_list("pk", flat=True)) == {
        alone.pk,
        invited_only.pk,
        inactive_sponsor.pk,
    }
    event = AuditEvent.objects.get(action="client.owner_succession")
    assert (event.object_id, event.actor_label) == (shared.registration_id, "sweep_orphans")
    assert (event.before["owner"], event.after["owner"], event.after["successor"]) == (leaver.pk, bea.pk, "bea")
    assert Counter(AuditEvent.objects.values_list("action", flat=True)) == {
        "user.deactivate": 1,
        "client.owner_succession": 1,
        "client.orphaned": 3,
    }
    to = sorted(m.to[0] for m in mail.outbox)
    assert to == ["bea@example.com", "team@example.com"]
    bea_mail = next(m for m in mail.outbox if m.to == ["bea@example.com"])
    assert shared.registration_id in bea_mail.body and alone.registration_id not in bea_mail.body
    team_mail = next(m for m in mail.outbox if m.to == ["team@example.com"])
    assert shared.registration_id not in team_mail.body

    # Time travel: the orphans' grace passes; the succeeded client is never suspended, the run is not repeated.
    later = sweep_orphans(now=NOW + dt.timedelta(hours=73))
    assert later.counts == {"suspended": 3}
    assert Client.objects.get(pk=shared.pk).state == ClientState.ACTIVE
    assert AuditEvent.objects.filter(action="client.owner_succession").count() == 1
    assert len(mail.outbox) == 2
    assert verify_chain()[1] is None


def test_leaver_through_scim_delete_passes_the_client_to_the_cosponsor(client):
    leaver = UserFactory(username="scim-leaver")
    dana = UserFactory(username="dana", email="dana@example.com")
    owned = ClientFactory(owner=leaver)
    sponsor(owned, dana)
    with override_settings(REGISTRAR_SCIM_TOKEN=TOKEN):
        response = client.delete(f"/scim/v2/Users/{leaver.pk}", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 204
    assert sweep_orphans(now=NOW).counts == {"succeeded": 1}
    owned.refresh_from_db()
    assert (owned.owner_id, owned.orphaned_at) == (dana.pk, None)
    assert sweep_orphans(now=NOW + dt.timedelta(days=40)).total == 0  # once


def test_a_sponsor_with_no_room_is_passed_over_and_with_nobody_left_the_client_orphans_until_one_has_room():
    leaver = UserFactory(username="lv", is_active=False)
    full, roomy = UserFactory(username="full"), UserFactory(username="roomy")
    first = ClientFactory(owner=leaver)
    sponsor(first, full, accepted_days_ago=30)
    sponsor(first, roomy, accepted_days_ago=1)
    only_full = ClientFactory(owner=leaver)
    sponsor(only_full, full)
    ClientFactory(owner=full)  # full already holds one live client
    with mock.patch("inventory.quotas.owner_live_limit", return_value=1):
        result = sweep_orphans(now=NOW)
    assert result.counts == {"succeeded": 1, "orphaned": 1}
    assert Client.objects.get(pk=first.pk).owner_id == roomy.pk
    assert Client.objects.get(pk=only_full.pk).orphaned_at == NOW
    # Room later (the limit is raised): the next run hands the orphan to its sponsor and clears the flag.
    with mock.patch("inventory.quotas.owner_live_limit", return_value=5):
        assert sweep_orphans(now=NOW + dt.timedelta(hours=1)).counts == {"succeeded": 1}
    only_full.refresh_from_db()
    assert (only_full.owner_id, only_full.orphaned_at) == (full.pk, None)
    event = AuditEvent.objects.get(action="client.owner_succession", object_id=only_full.registration_id)
    assert event.before["orphaned_at"] is not None and event.after["orphaned_at"] is None


def test_ended_unmanaged_and_owned_clients_are_left_alone():
    leaver = UserFactory(is_active=False)
    here = UserFactory()
    for kwargs in ({"state": ClientState.RETIRED}, {"managed": False}):
        sponsor(ClientFactory(owner=leaver, **kwargs), here)
    kept = ClientFactory(owner=UserFactory())
    sponsor(kept, here)
    assert sweep_orphans(now=NOW).counts.get("succeeded", 0) == 0
    assert Client.objects.get(pk=kept.pk).owner_id != here.pk
    assert not AuditEvent.objects.filter(action="client.owner_succession").exists()
