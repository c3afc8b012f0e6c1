"""Anonymous clients expire unless used (issue 17 item 3, docs/mcp.md "Expire unless used").

Usage reports (inventory.usage) renew a used anonymous client through the lifecycle (client.renew): its use + its
approved lifetime, at most once per use window, never beyond the tier ceiling; unused, the expiry sweep ends it.
The clock is moved by patching ``timezone.now`` (every module here reads the time through it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from approvals.models import RegistrationRequest
from inventory.choices import ClientState, CreatedVia, RiskTier
from inventory.models import Client
from inventory.sweeps import sweep_expired
from inventory.usage import parse_usage_batch, usage_ingest
from portal.audit import Actor
from portal.models import AuditEvent
from tests.factories import ClientFactory, IdPFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LIFETIME = 2 * 86400  # the profile's short lifetime, the client's approved one


@pytest.fixture
def clock(monkeypatch):
    class Clock:
        now = T0

        def at(self, when):
            self.now = when
            return when

    clock = Clock()
    monkeypatch.setattr(timezone, "now", lambda: clock.now)
    return clock


@pytest.fixture
def kc():
    return IdPFactory(name="kc")


def anonymous_client(kc, client_id="mcp-1", **fields):
    values = {
        "idp": kc,
        "idp_client_id": client_id,
        "created_via": CreatedVia.ANONYMOUS,
        "risk_tier": RiskTier.MEDIUM,
        "ceiling_ttl_seconds": LIFETIME,
        "expires_at": T0 + timedelta(seconds=LIFETIME),
        "last_used_at": None,
    }
    return ClientFactory(**(values | fields))


def report(client_id, used_at):
    reports = parse_usage_batch([{"idp": "kc", "client_id": client_id, "last_used_at": used_at.isoformat()}])
    return usage_ingest(reports, actor=Actor.system("usage-test"), source="test")


def renewals(client):
    return list(AuditEvent.objects.filter(action="client.renew", object_id=client.registration_id).order_by("pk"))


def test_a_used_anonymous_client_is_renewed_once_per_window_and_audited(clock, kc):
    client = anonymous_client(kc)
    used = clock.at(T0 + DAY + timedelta(hours=1))
    result = report("mcp-1", used)
    client.refresh_from_db()
    assert result.extended == [client.registration_id]
    assert client.expires_at == used + timedelta(seconds=LIFETIME) and client.renewals == 1
    [event] = renewals(client)
    assert event.actor_type == "system" and "expires unless used" in event.reason
    assert event.before["expires_at"] == (T0 + timedelta(seconds=LIFETIME)).isoformat()
    assert event.after["expires_at"] == client.expires_at.isoformat() and event.after["ttl_seconds"] == LIFETIME
    ingest = AuditEvent.objects.filter(action="usage.ingest").latest("pk")
    assert ingest.after["extended"] == [client.registration_id]

    # Used again inside the window (24 h): last use moves forward, the expiry does not, no event.
    again = clock.at(used + timedelta(hours=5))
    assert report("mcp-1", again).extended == []
    client.refresh_from_db()
    assert client.last_used_at == again and client.expires_at == used + timedelta(seconds=LIFETIME)
    assert len(renewals(client)) == 1 and client.renewals == 1

    # Used after the window: renewed again, from that use.
    later = clock.at(used + DAY + timedelta(minutes=1))
    assert report("mcp-1", later).extended == [client.registration_id]
    client.refresh_from_db()
    assert client.expires_at == later + timedelta(seconds=LIFETIME) and client.renewals == 2
    assert len(renewals(client)) == 2


def test_renewal_on_use_never_goes_beyond_the_ceiling(clock, kc):
    # The approved lifetime is longer than the tier allows: the tier ceiling wins.
    wide = anonymous_client(kc, "wide", risk_tier=RiskTier.LOW, ceiling_ttl_seconds=30 * 86400, expires_at=T0 + DAY)
    # A report from a clock a few minutes ahead buys no more than the lifetime from now.
    skewed = anonymous_client(kc, "skewed")
    now = clock.at(T0 + DAY + timedelta(hours=2))
    reports = parse_usage_batch(
        [
            {"idp": "kc", "client_id": "wide", "last_used_at": now.isoformat()},
            {"idp": "kc", "client_id": "skewed", "last_used_at": (now + timedelta(minutes=4)).isoformat()},
        ]
    )
    result = usage_ingest(reports, actor=Actor.system("usage-test"), source="test")
    wide.refresh_from_db()
    skewed.refresh_from_db()
    assert sorted(result.extended) == sorted([wide.registration_id, skewed.registration_id])
    assert wide.expires_at == now + DAY  # low tier: 1 day, not the 30 days on record
    assert skewed.expires_at == now + timedelta(seconds=LIFETIME)


def test_only_anonymous_clients_that_may_renew_directly_are_renewed(clock, kc):
    ordinary = ClientFactory(idp=kc, idp_client_id="ordinary", expires_at=T0 + DAY, created_via=CreatedVia.TOKEN)
    high = anonymous_client(kc, "high", risk_tier=RiskTier.HIGH, ceiling_ttl_seconds=86400, expires_at=T0 + DAY)
    stale = anonymous_client(kc, "stale", stale_at=T0)
    suspended = anonymous_client(kc, "suspended", state=ClientState.SUSPENDED)
    clock.at(T0 + timedelta(hours=20))
    reports = parse_usage_batch(
        [
            {"idp": "kc", "client_id": c.idp_client_id, "last_used_at": (T0 + timedelta(hours=20)).isoformat()}
            for c in (ordinary, high, stale, suspended)
        ]
    )
    before = {c.pk: c.expires_at for c in (ordinary, high, stale, suspended)}
    result = usage_ingest(reports, actor=Actor.system("usage-test"), source="test")
    assert result.updated == 4 and result.extended == []
    assert {c.pk: c.expires_at for c in Client.objects.all()} == before
    assert not AuditEvent.objects.filter(action__startswith="client.renew").exists()
    assert not RegistrationRequest.objects.exists()  # a use never files a renewal for review


def test_unused_anonymous_clients_expire_at_their_short_lifetime(clock, kc):
    unused = anonymous_client(kc, "unused")
    used = anonymous_client(kc, "used")
    clock.at(T0 + DAY)
    report("used", T0 + DAY)
    late = clock.at(T0 + timedelta(seconds=LIFETIME, minutes=1))
    assert sweep_expired(now=late).counts["expired"] == 1
    unused.refresh_from_db()
    used.refresh_from_db()
    assert unused.state == ClientState.EXPIRED and used.state == ClientState.ACTIVE
    # ... and the used one too, once it is no longer used.
    end = clock.at(T0 + DAY + timedelta(seconds=LIFETIME, minutes=1))
    sweep_expired(now=end)
    used.refresh_from_db()
    assert used.state == ClientState.EXPIRED
    assert report("used", end).extended == []  # an ended client is not brought back by a late report
