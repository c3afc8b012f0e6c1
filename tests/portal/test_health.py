"""/healthz (the process answers) and /readyz (its dependencies answer), against real services and real failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from inventory import metrics as inventory_metrics
from inventory.choices import IdPKind, OutboxStatus
from inventory.models import OutboxEntry
from portal.models import Heartbeat
from tests.factories import ClientFactory, IdPFactory
from tests.portal.loopback import closed_port, http_server

PROBE = {"REMOTE_ADDR": "127.0.0.1"}
OUTSIDER = {"REMOTE_ADDR": "203.0.113.5"}


def rfc7591_idp(name: str, issuer: str):
    return IdPFactory(
        name=name,
        kind=IdPKind.RFC7591,
        config={"issuer": issuer, "registration_endpoint": f"{issuer}/reg", "token_endpoint": f"{issuer}/token"},
        secrets={"initial_access_token": "iat-for-tests"},
    )


@pytest.fixture(autouse=True)
def fresh_idp_results():
    inventory_metrics._probe_results.clear()
    yield
    inventory_metrics._probe_results.clear()


def test_healthz_answers_without_touching_the_database(client):
    # No django_db mark: any query would raise.
    response = client.get("/healthz", **PROBE)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_names_every_check_and_is_ready_when_dependencies_answer(client):
    IdPFactory(name="dry")
    response = client.get("/readyz", **PROBE)
    assert response.status_code == 200
    body = response.json()
    assert {"database", "cache", "broker", "workers", "outbox", "idp:dry"} <= body["checks"].keys()
    for name in ("database", "cache", "broker"):
        assert body["checks"][name]["status"] == "ok"
        assert body["checks"][name]["required"] is True
    assert body["checks"]["idp:dry"] == {
        "status": "ok",
        "required": False,
        "kind": "dry-run",
        "cached": False,
        "elapsed_ms": body["checks"]["idp:dry"]["elapsed_ms"],
    }
    # No worker has beaten here: reported, not required, so the answer is "degraded", still 200.
    assert body["checks"]["workers"]["status"] == "warn"
    assert body["status"] == "degraded"


@pytest.mark.django_db
def test_broker_down_makes_readyz_503_naming_it_while_healthz_stays_200(client):
    with override_settings(
        CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0", CELERY_BROKER_TRANSPORT_OPTIONS={}
    ):
        ready = client.get("/readyz", **PROBE)
        alive = client.get("/healthz", **PROBE)
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "fail"
    assert body["checks"]["broker"]["status"] == "fail"
    assert "Connection refused" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["status"] == "ok"
    assert alive.status_code == 200


@pytest.mark.django_db
def test_redis_cache_down_makes_readyz_503_naming_it(client):
    port = closed_port()
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://:hunter2@127.0.0.1:{port}/0",
        }
    }
    with override_settings(CACHES=caches):
        response = client.get("/readyz", **PROBE)
    assert response.status_code == 503
    cache = response.json()["checks"]["cache"]
    assert cache["status"] == "fail" and str(port) in cache["error"]
    assert "hunter2" not in response.content.decode()


@pytest.mark.django_db
def test_redis_cache_up_is_pinged(client):
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/13"}
    }
    with override_settings(CACHES=caches):
        response = client.get("/readyz", **PROBE)
    assert response.json()["checks"]["cache"] == {
        "status": "ok",
        "required": True,
        "backend": "redis",
        "elapsed_ms": response.json()["checks"]["cache"]["elapsed_ms"],
    }


@pytest.mark.django_db
def test_unreachable_idp_is_reported_without_taking_the_process_out(client):
    rfc7591_idp("down-idp", f"http://127.0.0.1:{closed_port()}")
    response = client.get("/readyz", **PROBE)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["idp:down-idp"]["status"] == "fail"
    assert "ConnectError" in body["checks"]["idp:down-idp"]["error"]


@pytest.mark.django_db
def test_an_idp_named_required_turns_readyz_503(client):
    rfc7591_idp("must-have", f"http://127.0.0.1:{closed_port()}")
    with override_settings(REGISTRAR_READYZ_REQUIRED=["database", "idp:must-have"]):
        response = client.get("/readyz", **PROBE)
    assert response.status_code == 503
    assert response.json()["checks"]["idp:must-have"]["required"] is True


@pytest.mark.django_db
def test_a_required_check_that_does_not_exist_fails_closed(client):
    with override_settings(REGISTRAR_READYZ_REQUIRED=["database", "databse"]):
        response = client.get("/readyz", **PROBE)
    assert response.status_code == 503
    assert "no such check" in response.json()["checks"]["databse"]["error"]


@pytest.mark.django_db
def test_idp_reachability_is_cached_so_a_probe_storm_costs_the_idp_one_request(client):
    with http_server() as server:
        idp = rfc7591_idp("cached-idp", f"http://127.0.0.1:{server.server_port}")
        answers = [client.get("/readyz", **PROBE).json()["checks"]["idp:cached-idp"] for _ in range(5)]
        assert server.hits == [("GET", "/.well-known/openid-configuration")]
        assert [a["cached"] for a in answers] == [False, True, True, True, True]
        assert all(a["status"] == "ok" for a in answers)
        # A changed connection is probed again at once; so is every call when caching is off.
        idp.config = {**idp.config, "token_endpoint": f"http://127.0.0.1:{server.server_port}/token2"}
        idp.save()
        client.get("/readyz", **PROBE)
        assert len(server.hits) == 2
        with override_settings(REGISTRAR_READYZ_IDP_CACHE_SECONDS=0):
            client.get("/readyz", **PROBE)
            client.get("/readyz", **PROBE)
        assert len(server.hits) == 4


@pytest.mark.django_db
def test_idp_answering_5xx_is_unreachable_but_4xx_is_reachable(client):
    with http_server(status=503) as failing, http_server(status=404) as no_discovery:
        rfc7591_idp("failing", f"http://127.0.0.1:{failing.server_port}")
        rfc7591_idp("plain", f"http://127.0.0.1:{no_discovery.server_port}")
        checks = client.get("/readyz", **PROBE).json()["checks"]
    assert checks["idp:failing"]["status"] == "fail" and "503" in checks["idp:failing"]["error"]
    assert checks["idp:plain"]["status"] == "ok"


@pytest.mark.django_db
def test_outbox_backlog_is_a_warning_with_its_age(client):
    client_row = ClientFactory()
    now = timezone.now()
    OutboxEntry.objects.create(
        client=client_row, idp=client_row.idp, operation="create", next_attempt_at=now - timedelta(seconds=400)
    )
    OutboxEntry.objects.create(
        client=client_row, idp=client_row.idp, operation="update", status=OutboxStatus.DEAD, next_attempt_at=now
    )
    response = client.get("/readyz", **PROBE)
    outbox = response.json()["checks"]["outbox"]
    assert response.status_code == 200
    assert outbox["status"] == "warn" and outbox["due"] == 1 and outbox["dead"] == 1
    assert 399 <= outbox["oldest_due_seconds"] < 460


@pytest.mark.django_db
def test_fresh_worker_heartbeats_make_the_workers_check_ok(client):
    Heartbeat.objects.create(name="queue:celery", beat_at=timezone.now() - timedelta(seconds=5), host="w1")
    workers = client.get("/readyz", **PROBE).json()["checks"]["workers"]
    assert workers["status"] == "ok"
    assert workers["queues"]["celery"]["host"] == "w1"
    Heartbeat.objects.filter(name="queue:celery").update(beat_at=timezone.now() - timedelta(minutes=5))
    assert client.get("/readyz", **PROBE).json()["checks"]["workers"]["status"] == "warn"


@pytest.mark.django_db
def test_callers_outside_the_probe_networks_see_statuses_but_no_details(client):
    with override_settings(
        CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0", CELERY_BROKER_TRANSPORT_OPTIONS={}
    ):
        response = client.get("/readyz", **OUTSIDER)
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker == {"status": "fail", "required": True}


@pytest.mark.django_db
def test_check_heartbeats_command_exits_by_the_age_of_each_queue(capsys):
    with pytest.raises(SystemExit) as never:
        call_command("check_heartbeats")
    assert never.value.code == 1
    assert "queue=celery last_seen=never" in capsys.readouterr().out
    Heartbeat.objects.create(name="queue:celery", beat_at=timezone.now() - timedelta(seconds=10), host="w1")
    Heartbeat.objects.create(name="sweep:expired", beat_at=timezone.now(), duration_seconds=0.25)
    call_command("check_heartbeats")
    out = capsys.readouterr().out
    assert "queue=celery last_seen_seconds=10 host=w1" in out
    assert "sweep=expired last_run_seconds=0 duration_seconds=0.25" in out
    with pytest.raises(SystemExit) as stale:
        call_command("check_heartbeats", "--max-age", "5")
    assert stale.value.code == 1
    with pytest.raises(SystemExit) as bad:
        call_command("check_heartbeats", "--max-age", "0")
    assert bad.value.code == 2
