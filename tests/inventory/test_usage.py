"""POST /api/v1/usage/: last use from the IdP — validated whole, only forward, unknown clients become shadow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.choices import CreatedVia
from inventory.models import Client
from inventory.usage import UsageBatchInvalid, parse_usage_batch, usage_ingest
from portal.audit import Actor
from portal.crypto import hash_token
from portal.models import ApiToken, AuditEvent
from tests.factories import ClientFactory, IdPFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/usage/"


def make_token(user, rights, plaintext="rapi_usage_test_0001", name="shipper"):
    ApiToken.objects.create(
        user=user, name=name, prefix=plaintext[:12], token_hash=hash_token(plaintext), rights=rights
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return api


@pytest.fixture
def shipper():
    return make_token(UserFactory(username="log-shipper"), ["usage:write"])


@pytest.fixture
def kc():
    return IdPFactory(name="kc")


def iso(when):
    return when.isoformat()


def test_batch_moves_last_use_forward_and_names_source(shipper, kc):
    a = ClientFactory(idp=kc, idp_client_id="a", last_used_at=None)
    b = ClientFactory(idp=kc, idp_client_id="b", last_used_at=timezone.now() - timedelta(days=3))
    newer = timezone.now() - timedelta(minutes=1)
    older = timezone.now() - timedelta(hours=2)
    batch = [
        {"idp": "kc", "client_id": "a", "last_used_at": iso(older)},
        {"idp": "kc", "client_id": "a", "last_used_at": iso(newer)},  # the latest in a batch wins, in any order
        {"idp": "kc", "client_id": "b", "last_used_at": iso(older)},
    ]
    response = shipper.post(URL, batch, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"received": 3, "updated": 2, "unchanged": 0, "shadow_recorded": 0}
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.last_used_at == newer and b.last_used_at == older
    assert a.last_used_source == "usage-api:shipper"
    event = AuditEvent.objects.get(action="usage.ingest")
    assert event.after["updated"] == 2 and event.actor_label


def test_last_use_never_moves_back(shipper, kc):
    recent = timezone.now() - timedelta(minutes=5)
    client = ClientFactory(idp=kc, idp_client_id="a", last_used_at=recent, last_used_source="idp:kc")
    response = shipper.post(
        URL, {"events": [{"idp": "kc", "client_id": "a", "last_used_at": iso(recent - timedelta(days=1))}]}, "json"
    )
    assert response.status_code == 200
    assert response.json()["updated"] == 0 and response.json()["unchanged"] == 1
    client.refresh_from_db()
    assert client.last_used_at == recent and client.last_used_source == "idp:kc"


def test_bad_batch_refused_whole_with_reasons(shipper, kc):
    client = ClientFactory(idp=kc, idp_client_id="a", last_used_at=None)
    batch = [
        {"idp": "kc", "client_id": "a", "last_used_at": iso(timezone.now())},  # fine, but the batch is refused
        {"idp": "nope", "client_id": "b", "last_used_at": iso(timezone.now())},
        {"idp": "kc", "client_id": "c", "last_used_at": "yesterday"},
        {"idp": "kc", "client_id": "d", "last_used_at": "2026-01-01T10:00:00"},  # no offset
        {"idp": "kc", "client_id": "e", "last_used_at": iso(timezone.now() + timedelta(hours=1))},
        {"idp": "kc", "last_used_at": iso(timezone.now())},
        {"idp": "kc", "client_id": "", "last_used_at": iso(timezone.now()), "secret": "x"},
        "not an object",
    ]
    before_clients = Client.objects.count()
    response = shipper.post(URL, batch, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_batch"
    problems = {(e["index"], e["field"]) for e in body["errors"]}
    assert problems == {
        (1, "idp"),
        (2, "last_used_at"),
        (3, "last_used_at"),
        (4, "last_used_at"),
        (5, "client_id"),
        (6, "secret"),
        (6, "client_id"),
        (7, ""),
    }
    assert "no IdP connection named 'nope'" in body["detail"]
    client.refresh_from_db()
    assert client.last_used_at is None
    assert Client.objects.count() == before_clients
    assert not AuditEvent.objects.filter(action__in=["usage.ingest", "client.discovered"]).exists()


@pytest.mark.parametrize("payload", [[], {"items": []}, "x", {"events": "x"}])
def test_malformed_batches(shipper, payload):
    response = shipper.post(URL, payload, format="json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_batch"


def test_batch_size_bounded(kc):
    now = timezone.now().isoformat()
    with pytest.raises(UsageBatchInvalid, match="at most"):
        parse_usage_batch([{"idp": "kc", "client_id": str(i), "last_used_at": now} for i in range(5001)])


def test_unknown_client_recorded_once_as_shadow(shipper, kc):
    when = timezone.now() - timedelta(minutes=2)
    response = shipper.post(URL, [{"idp": "kc", "client_id": "ghost", "last_used_at": iso(when)}], format="json")
    assert response.status_code == 200 and response.json()["shadow_recorded"] == 1
    shadow = Client.objects.get(idp=kc, idp_client_id="ghost")
    assert not shadow.managed and shadow.owner_id is None and shadow.created_via == CreatedVia.DISCOVERED
    assert shadow.discovered_at is not None and shadow.last_used_at == when
    assert AuditEvent.objects.filter(action="client.discovered", object_id=shadow.registration_id).count() == 1
    later = when + timedelta(minutes=1)
    again = shipper.post(URL, [{"idp": "kc", "client_id": "ghost", "last_used_at": iso(later)}], format="json")
    assert again.json() == {"received": 1, "updated": 1, "unchanged": 0, "shadow_recorded": 0}
    assert Client.objects.filter(idp=kc, idp_client_id="ghost").count() == 1
    shadow.refresh_from_db()
    assert shadow.last_used_at == later


def test_same_client_id_at_another_idp_is_another_client(shipper, kc):
    other = IdPFactory(name="other")
    mine = ClientFactory(idp=kc, idp_client_id="a", last_used_at=None)
    shipper.post(URL, [{"idp": "other", "client_id": "a", "last_used_at": iso(timezone.now())}], format="json")
    mine.refresh_from_db()
    assert mine.last_used_at is None
    assert Client.objects.get(idp=other, idp_client_id="a").managed is False


def test_only_usage_write_tokens(kc):
    user = UserFactory(username="someone", roles=["admin"], is_superuser=True)
    item = [{"idp": "kc", "client_id": "a", "last_used_at": iso(timezone.now())}]
    api_only = make_token(user, ["api"], plaintext="rapi_usage_test_0002")
    assert api_only.post(URL, item, format="json").status_code == 403
    session = APIClient()
    session.force_login(user)
    assert session.post(URL, item, format="json").status_code in (401, 403)
    assert APIClient().post(URL, item, format="json").status_code in (401, 403)
    # and a usage:write token opens nothing else
    usage = make_token(user, ["usage:write"], plaintext="rapi_usage_test_0003")
    assert usage.get("/api/v1/clients/").status_code == 403
    assert not AuditEvent.objects.filter(action="usage.ingest").exists()


@pytest.mark.postgres_only  # one UPDATE … FROM unnest(): on SQLite usage moves forward row by row
def test_ingest_is_one_update_for_known_clients(kc, django_assert_max_num_queries):
    clients = [ClientFactory(idp=kc, idp_client_id=f"c{i}", last_used_at=None) for i in range(50)]
    reports = parse_usage_batch(
        [{"idp": "kc", "client_id": c.idp_client_id, "last_used_at": iso(timezone.now())} for c in clients]
    )
    # savepoint, the one UPDATE, the known-client lookup, the audit event, release: not one statement per client
    with django_assert_max_num_queries(5):
        result = usage_ingest(reports, actor=Actor.system("test"), source="test")
    assert result.updated == 50


def test_explain_page_and_api_show_last_use_and_source(client, security_user, kc, shipper):
    target = ClientFactory(idp=kc, idp_client_id="a", last_used_at=None)
    shipper.post(URL, [{"idp": "kc", "client_id": "a", "last_used_at": "2026-12-01T09:30:00+00:00"}], format="json")
    client.force_login(security_user)
    page = client.get(f"/inventory/{target.registration_id}/").content.decode()
    assert "2026-12-01 09:30" in page and "reported by usage-api:shipper" in page
    api = APIClient()
    api.force_authenticate(security_user)
    row = api.get(f"/api/v1/clients/{target.registration_id}/").json()
    assert row["last_used_source"] == "usage-api:shipper" and row["last_used_at"].startswith("2026-12-01T09:30")
