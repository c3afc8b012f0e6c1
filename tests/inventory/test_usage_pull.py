"""Usage read from the IdP itself (Keycloak admin events, recorded fake): forward only, shadow found, one event."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import httpx
import pytest
from django.utils import timezone

from inventory.connectors import ConnectorError
from inventory.models import Client
from inventory.usage import usage_pull
from portal.models import AuditEvent
from tests.connectors.test_keycloak import TOKEN_CALL, FakeKeycloak, events, ms
from tests.factories import ClientFactory, IdPFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def keycloak():
    return IdPFactory(
        name="corp-keycloak",
        kind="keycloak",
        config={"base_url": "https://kc.test", "realm": "agents"},
    )


def pulled(idp, fake, now):
    with mock.patch("inventory.outbox.push.connector_for", return_value=fake.connector()):
        return usage_pull(idp, now=now)


def test_pull_moves_last_use_forward_records_shadow_once_and_audits_one_batch(keycloak):
    now = timezone.now().replace(microsecond=0)
    newer, older = now - timedelta(minutes=5), now - timedelta(hours=3)
    used = ClientFactory(idp=keycloak, idp_client_id="reg_used", last_used_at=None)
    fresh = ClientFactory(idp=keycloak, idp_client_id="reg_fresh", last_used_at=now - timedelta(minutes=1))
    day = (now - timedelta(days=2)).date().isoformat()
    fake = FakeKeycloak(
        TOKEN_CALL,
        (
            "GET",
            events(f"dateFrom={day}&first=0&max=100"),
            None,
            httpx.Response(
                200,
                json=[
                    {"clientId": "reg_used", "time": ms(newer)},
                    {"clientId": "reg_used", "time": ms(older)},  # older event of the same client: newest wins
                    {"clientId": "reg_fresh", "time": ms(older)},  # older than what Registrar knows: no rewind
                    {"clientId": "shadow-bot", "time": ms(older)},
                    {"clientId": "registrar-admin", "time": ms(newer)},  # Registrar's own admin client
                ],
            ),
        ),
    )
    result = pulled(keycloak, fake, now)
    fake.assert_done()
    assert result.to_dict() == {"received": 3, "updated": 1, "unchanged": 1, "shadow_recorded": 1}
    used.refresh_from_db()
    assert (used.last_used_at, used.last_used_source) == (newer, "idp:corp-keycloak")
    assert Client.objects.get(pk=fresh.pk).last_used_at == now - timedelta(minutes=1)
    shadow = Client.objects.get(idp_client_id="shadow-bot")
    assert (shadow.managed, shadow.owner_id) == (False, None)
    assert not Client.objects.filter(idp_client_id="registrar-admin").exists()
    assert AuditEvent.objects.filter(action="usage.ingest").count() == 1
    assert AuditEvent.objects.filter(action="client.discovered").count() == 1


def test_an_idp_that_cannot_report_usage_or_is_down_changes_nothing(keycloak):
    dry = IdPFactory(name="dry")
    assert usage_pull(dry) is None
    now = timezone.now()
    day = (now - timedelta(days=2)).date().isoformat()
    fake = FakeKeycloak(
        TOKEN_CALL,
        ("GET", events(f"dateFrom={day}&first=0&max=100"), None, httpx.Response(200, json={"not": "a list"})),
    )
    with pytest.raises(ConnectorError):
        pulled(keycloak, fake, now)
    assert not AuditEvent.objects.exists() and not Client.objects.exists()


def test_the_pull_task_is_on_the_beat_and_skips_a_failing_idp(keycloak):
    from inventory.tasks import pull_usage
    from portal.celery import app

    assert any(e["task"] == "inventory.tasks.pull_usage" for e in app.conf.beat_schedule.values())
    with mock.patch("inventory.usage.usage_pull", side_effect=ConnectorError("keycloak: down")):
        assert pull_usage() == {}
