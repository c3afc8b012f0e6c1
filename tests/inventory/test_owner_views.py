"""Owner pages: list with query counts at two sizes, row actions, bulk actions, rotate, transfer inbox."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from joserfc.jwk import ECKey

from inventory.choices import ClientState, RiskTier
from inventory.models import Client, OutboxEntry, TransferOffer, TransferState
from portal.models import AuditEvent
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db
MINE = "/inventory/mine/"


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def test_mine_lists_live_clients_soonest_expiry_first(owner_client, owner):
    now = timezone.now()
    later = ClientFactory(owner=owner, name="later", expires_at=now + dt.timedelta(days=3))
    sooner = ClientFactory(owner=owner, name="sooner", expires_at=now + dt.timedelta(hours=2))
    ClientFactory(owner=owner, name="gone", state=ClientState.RETIRED)
    ClientFactory(name="someone-elses")
    response = owner_client.get(MINE)
    assert response.status_code == 200
    assert [c.name for c in response.context["clients"]] == ["sooner", "later"]
    html = response.content.decode()
    assert "someone-elses" not in html and "gone" not in html
    assert 'data-select-all="ids"' in html and "data-confirm=" in html
    assert sooner.registration_id in html and later.idp.name in html


def test_mine_empty_state(owner_client):
    response = owner_client.get(MINE)
    assert b'class="empty"' in response.content


def test_mine_requires_login(client):
    assert client.get(MINE).status_code == 302


@pytest.mark.parametrize("size", [3, 30])
def test_mine_query_count_does_not_grow_with_rows(owner_client, owner, size, django_assert_max_num_queries):
    for _ in range(size):
        ClientFactory(owner=owner)
    with django_assert_max_num_queries(12):
        response = owner_client.get(MINE)
    assert len(response.context["clients"]) == size


def test_mine_query_counts_equal_at_two_sizes(owner_client, owner):
    counts = []
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for size in (2, 25):
        Client.objects.filter(owner=owner).delete()
        for _ in range(size):
            ClientFactory(owner=owner)
        owner_client.get(MINE)  # warm per-process caches (content types, sessions)
        with CaptureQueriesContext(connection) as ctx:
            owner_client.get(MINE)
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_renew_retire_suspend_resume_from_the_list(owner_client, owner):
    c = ClientFactory(owner=owner, expires_at=timezone.now() + dt.timedelta(hours=1))
    url = lambda action: reverse("inventory:client-action", args=[c.registration_id, action])  # noqa: E731
    response = owner_client.post(url("renew"), follow=True)
    c.refresh_from_db()
    assert c.expires_at > timezone.now() + dt.timedelta(hours=23)
    assert f"renewed until {c.expires_at:%Y-%m-%d %H:%M} UTC" in response.content.decode()  # the new expiry
    owner_client.post(url("suspend"))
    assert Client.objects.get(pk=c.pk).state == ClientState.SUSPENDED
    owner_client.post(url("resume"))
    assert Client.objects.get(pk=c.pk).state == ClientState.ACTIVE
    response = owner_client.post(url("retire"), follow=True)
    assert Client.objects.get(pk=c.pk).state == ClientState.RETIRED
    assert "retired" in response.content.decode()
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "client.renew",
        "client.suspend",
        "client.resume",
        "client.retire",
    ]


def test_high_tier_renewal_shows_it_went_to_review(owner_client, owner):
    c = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    response = owner_client.post(reverse("inventory:client-action", args=[c.registration_id, "renew"]), follow=True)
    assert "sent for review" in response.content.decode()
    assert "renewal in review" in owner_client.get(MINE).content.decode()


def test_illegal_action_shows_an_error_and_changes_nothing(owner_client, owner):
    c = ClientFactory(owner=owner)
    response = owner_client.post(reverse("inventory:client-action", args=[c.registration_id, "resume"]), follow=True)
    assert "cannot go from active to active" in response.content.decode()
    assert AuditEvent.objects.count() == 0


def test_actions_on_someone_elses_client_are_forbidden(owner_client):
    c = ClientFactory()
    for action in ("renew", "retire", "suspend"):
        assert (
            owner_client.post(reverse("inventory:client-action", args=[c.registration_id, action])).status_code == 403
        )
    assert owner_client.get(reverse("inventory:rotate-key", args=[c.registration_id])).status_code == 403
    assert (
        owner_client.post(reverse("inventory:bulk"), {"action": "retire", "ids": [c.registration_id]}).status_code
        == 403
    )
    assert Client.objects.get(pk=c.pk).state == ClientState.ACTIVE and AuditEvent.objects.count() == 0


def test_bulk_renew_and_retire(owner_client, owner):
    low = [ClientFactory(owner=owner) for _ in range(3)]
    high = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    ids = [c.registration_id for c in [*low, high]]
    response = owner_client.post(reverse("inventory:bulk"), {"action": "renew", "ids": ids}, follow=True)
    html = response.content.decode()
    assert "3 client(s) renewed" in html and "1 renewal(s) sent for review" in html
    assert set(Client.objects.filter(pk__in=[c.pk for c in low]).values_list("renewals", flat=True)) == {1}
    owner_client.post(reverse("inventory:bulk"), {"action": "retire", "ids": ids[:2]})
    assert Client.objects.filter(state=ClientState.RETIRED).count() == 2
    assert AuditEvent.objects.filter(action="client.retire").count() == 2


def test_bulk_without_selection_or_action_is_an_error(owner_client, owner):
    ClientFactory(owner=owner)
    r = owner_client.post(reverse("inventory:bulk"), {"action": "retire"}, follow=True)
    assert "Select at least one client" in r.content.decode()
    r = owner_client.post(reverse("inventory:bulk"), {"action": "explode", "ids": ["x"]}, follow=True)
    assert "Choose renew or retire" in r.content.decode()
    assert AuditEvent.objects.count() == 0


def test_rotate_key_form(owner_client, owner):
    c = ClientFactory(owner=owner)
    url = reverse("inventory:rotate-key", args=[c.registration_id])
    assert owner_client.get(url).status_code == 200
    import json

    private = json.dumps({"keys": [ECKey.generate_key("P-256").as_dict(private=True)]})
    response = owner_client.post(url, {"jwks": private})
    assert response.status_code == 200 and "contains private key material (d)" in response.content.decode()
    assert Client.objects.get(pk=c.pk).jwks is None and OutboxEntry.objects.count() == 0
    public = json.dumps({"keys": [ECKey.generate_key("P-256").as_dict(private=False)]})
    assert owner_client.post(url, {"jwks": public}).status_code == 302
    assert Client.objects.get(pk=c.pk).jwks == json.loads(public)


def test_transfer_offer_and_accept_through_the_inbox(client, owner):
    dave = UserFactory(username="dave", roles=["owner"])
    c = ClientFactory(owner=owner)
    client.force_login(owner)
    url = reverse("inventory:transfer", args=[c.registration_id])
    r = client.post(url, {"username": "nobody"})
    assert "No person with that username" in r.content.decode()
    assert client.post(url, {"username": "dave", "reason": "moving teams"}).status_code == 302
    offer = TransferOffer.objects.get()
    client.force_login(dave)
    inbox = client.get(reverse("inventory:transfers")).content.decode()
    assert c.name in inbox and "moving teams" in inbox
    client.post(reverse("inventory:transfer-decide", args=[offer.pk, "accept"]))
    assert Client.objects.get(pk=c.pk).owner_id == dave.pk
    assert TransferOffer.objects.get().state == TransferState.ACCEPTED
    # the old owner can no longer act on it
    client.force_login(owner)
    assert client.post(reverse("inventory:client-action", args=[c.registration_id, "retire"])).status_code == 403


def test_only_the_recipient_can_accept(client, owner):
    dave = UserFactory(username="dave")
    c = ClientFactory(owner=owner)
    offer = TransferOffer.objects.create(client=c, from_user=owner, to_user=dave, offered_by=owner)
    client.force_login(UserFactory())
    assert client.post(reverse("inventory:transfer-decide", args=[offer.pk, "accept"])).status_code == 403
    assert Client.objects.get(pk=c.pk).owner_id == owner.pk


def test_orphans_page_and_take_over(client, owner):
    from tests.factories import TeamFactory

    manager = UserFactory(username="mgr")
    team = TeamFactory(manager=manager)
    leaver = UserFactory(is_active=False)
    c = ClientFactory(owner=leaver, team=team, orphaned_at=timezone.now())
    client.force_login(owner)
    assert c.name not in client.get(reverse("inventory:orphans")).content.decode()
    assert client.post(reverse("inventory:take-over", args=[c.registration_id])).status_code == 403
    client.force_login(manager)
    assert c.name in client.get(reverse("inventory:orphans")).content.decode()
    client.post(reverse("inventory:take-over", args=[c.registration_id]))
    assert Client.objects.get(pk=c.pk).owner_id == manager.pk


def _queries_for(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm per-process caches
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_transfer_inbox_and_orphans_query_counts_equal_at_two_sizes(client, owner, admin_user):
    counts = {"inbox": [], "orphans": []}
    leaver = UserFactory(is_active=False)
    for size in (2, 20):
        for _ in range(size - TransferOffer.objects.filter(to_user=owner).count()):
            c = ClientFactory()
            TransferOffer.objects.create(client=c, from_user=c.owner, to_user=owner)
        for _ in range(size - Client.objects.filter(owner=leaver).count()):
            ClientFactory(owner=leaver, orphaned_at=timezone.now())
        client.force_login(owner)
        counts["inbox"].append(_queries_for(client, reverse("inventory:transfers")))
        client.force_login(admin_user)
        counts["orphans"].append(_queries_for(client, reverse("inventory:orphans")))
    assert counts["inbox"][0] == counts["inbox"][1]
    assert counts["orphans"][0] == counts["orphans"][1]
