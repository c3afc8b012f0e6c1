"""/metrics: the figures match the database, events are counted where they happen, and only probes or the
token holder may read them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from approvals.choices import RequestState
from inventory.choices import ClientState, IdPKind, OutboxStatus, RiskTier
from inventory.connectors.errors import Transient
from inventory.models import OutboxEntry
from inventory.outbox.push import connector_for
from portal import metrics as portal_metrics
from portal.models import Heartbeat
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    low_body,
    make_token,
    post,
)
from tests.factories import ClientFactory, IdPFactory, RequestFactory
from tests.portal.loopback import http_server

ROOT = Path(__file__).resolve().parents[2]
PROBE = {"REMOTE_ADDR": "127.0.0.1"}
OUTSIDER = {"REMOTE_ADDR": "203.0.113.5"}
TOKEN = "metrics-token-" + "m" * 32


def scrape(client, **extra) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", **(extra or PROBE))
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(values, name: str, **labels) -> float | None:
    return values.get((name, frozenset(labels.items())))


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.mark.django_db
def test_state_figures_match_the_database(client):
    # Review queue: two medium, one high waiting; an approved one does not count.
    waiting = [
        RequestFactory(risk_tier=RiskTier.MEDIUM),
        RequestFactory(risk_tier=RiskTier.MEDIUM),
        RequestFactory(risk_tier=RiskTier.HIGH),
    ]
    RequestFactory(risk_tier=RiskTier.HIGH, state=RequestState.APPROVED)
    for request, age in zip(waiting, (600, 60, 30), strict=True):
        type(request).objects.filter(pk=request.pk).update(created_at=ago(age))
    # Outbox: two due (oldest 100 s), one scheduled later, two dead, one delivered.
    row = ClientFactory()
    for status, due_ago in (
        (OutboxStatus.PENDING, 100),
        (OutboxStatus.PENDING, 10),
        (OutboxStatus.PENDING, -300),
        (OutboxStatus.DEAD, 0),
        (OutboxStatus.DEAD, 0),
        (OutboxStatus.DONE, 0),
    ):
        OutboxEntry.objects.create(
            client=row, idp=row.idp, operation="update", status=status, next_attempt_at=ago(due_ago)
        )
    # Expiry: two live clients past expires_at (the oldest 90 s), one live in the future.
    ClientFactory(state=ClientState.ACTIVE, expires_at=ago(90))
    ClientFactory(state=ClientState.SUSPENDED, expires_at=ago(30))
    ClientFactory(state=ClientState.ACTIVE, expires_at=ago(-3600))
    # Overshoot: three confirmed and one unconfirmed expiry in the last hour; one two hours ago (outside).
    for overshoot in (1.0, 2.0, 10.0, None):
        ClientFactory(state=ClientState.EXPIRED, expires_at=ago(600), expiry_overshoot_seconds=overshoot)
    ClientFactory(state=ClientState.EXPIRED, expires_at=ago(7200), expiry_overshoot_seconds=999.0)
    Heartbeat.objects.create(name="queue:celery", beat_at=ago(20), delay_seconds=0.5, host="w1")
    Heartbeat.objects.create(name="sweep:expired", beat_at=ago(40), duration_seconds=1.5)

    values = scrape(client)

    assert value(values, "registrar_review_queue_depth", tier="medium") == 2
    assert value(values, "registrar_review_queue_depth", tier="high") == 1
    assert value(values, "registrar_review_queue_depth", tier="low") == 0
    assert 600 <= value(values, "registrar_review_queue_oldest_age_seconds") < 660
    assert value(values, "registrar_outbox_entries", status="pending") == 3
    assert value(values, "registrar_outbox_entries", status="due") == 2
    assert value(values, "registrar_outbox_entries", status="dead") == 2
    assert 100 <= value(values, "registrar_outbox_oldest_due_age_seconds") < 160
    assert 90 <= value(values, "registrar_sweep_lag_seconds") < 150
    assert value(values, "registrar_clients_overdue_for_expiry") == 2
    assert value(values, "registrar_expiry_overshoot_seconds", stat="p50") == 2.0
    assert value(values, "registrar_expiry_overshoot_seconds", stat="p99") == 10.0
    assert value(values, "registrar_expiry_overshoot_seconds", stat="max") == 10.0
    assert value(values, "registrar_expired_clients_last_hour", confirmed="true") == 3
    assert value(values, "registrar_expired_clients_last_hour", confirmed="false") == 1
    assert 20 <= value(values, "registrar_worker_heartbeat_age_seconds", queue="celery") < 80
    assert value(values, "registrar_worker_queue_delay_seconds", queue="celery") == 0.5
    assert value(values, "registrar_sweep_last_duration_seconds", sweep="expired") == 1.5
    assert value(values, "registrar_sweep_last_run_timestamp_seconds", sweep="expired") == pytest.approx(
        Heartbeat.objects.get(name="sweep:expired").beat_at.timestamp()
    )
    for collector in ("review_queue", "outbox", "expiry", "heartbeats"):
        assert value(values, "registrar_collector_up", collector=collector) == 1


@pytest.mark.django_db
def test_empty_state_reads_as_zero_and_a_missing_heartbeat_as_infinite(client):
    values = scrape(client)
    assert value(values, "registrar_review_queue_oldest_age_seconds") == 0
    assert value(values, "registrar_outbox_oldest_due_age_seconds") == 0
    assert value(values, "registrar_sweep_lag_seconds") == 0
    assert value(values, "registrar_worker_heartbeat_age_seconds", queue="celery") == float("inf")
    assert not [key for key in values if key[0] == "registrar_expiry_overshoot_seconds"]


@pytest.mark.django_db
def test_the_scrape_costs_a_fixed_number_of_queries(client, django_assert_num_queries):
    for _ in range(3):
        RequestFactory()
        ClientFactory(state=ClientState.EXPIRED, expires_at=ago(60), expiry_overshoot_seconds=1.0)
    # review queue 2, outbox 2, expiry 2, heartbeats 1, audit log seal lag 1
    with django_assert_num_queries(8):
        scrape(client)


@pytest.mark.django_db
def test_a_failing_collector_is_reported_and_the_others_still_answer(client):
    def boom(now):
        raise RuntimeError("database gone")

    portal_metrics.register_collector("boom", boom)
    try:
        values = scrape(client)
    finally:
        portal_metrics._COLLECTORS.pop("boom")
    assert value(values, "registrar_collector_up", collector="boom") == 0
    assert value(values, "registrar_collector_up", collector="outbox") == 1


def _registrations(channel: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("registrar_registrations_total", {"channel": channel, "outcome": outcome}) or 0.0


@pytest.mark.django_db
def test_registrations_are_counted_by_channel_and_outcome(client, catalogue, idp, owner):
    _, plaintext = make_token(owner)
    keys = [
        ("token", "created"),
        ("token", "pending"),
        ("token", "refused"),
        ("unknown", "unauthorized"),
        ("unknown", "invalid"),
    ]
    before = {key: _registrations(*key) for key in keys}
    assert post(client, low_body(), plaintext).status_code == 201
    assert post(client, low_body(scope="tickets:write"), plaintext).status_code == 202
    assert post(client, low_body(scope="nope:unknown"), plaintext).status_code == 400
    assert post(client, low_body(), "rat_not_a_real_token_xxxxxxxx").status_code == 401
    assert post(client, "{not json", plaintext).status_code == 400
    after = {key: _registrations(*key) for key in keys}
    assert {key: after[key] - before[key] for key in keys} == dict.fromkeys(keys, 1.0)
    values = scrape(client)
    assert value(values, "registrar_registrations_total", channel="token", outcome="created") == after[keys[0]]


@pytest.mark.django_db
def test_idp_calls_are_counted_and_timed_by_connection_and_outcome():
    with http_server(statuses={"/reg": 201, "/broken": 503, "/missing": 400}) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        idp = IdPFactory(
            name="metrics-idp",
            kind=IdPKind.RFC7591,
            config={"issuer": base, "registration_endpoint": f"{base}/reg", "token_endpoint": f"{base}/token"},
            secrets={"initial_access_token": "iat"},
        )
        labels = {"connection": "metrics-idp", "kind": "rfc7591", "method": "POST"}

        def count(outcome: str) -> float:
            return REGISTRY.get_sample_value("registrar_idp_requests_total", {**labels, "outcome": outcome}) or 0.0

        def timed() -> float:
            return REGISTRY.get_sample_value("registrar_idp_request_duration_seconds_count", labels) or 0.0

        before = {o: count(o) for o in ("ok", "server_error", "client_error")}, timed()
        with connector_for(idp) as connector:
            connector._request("POST", f"{base}/reg", bearer="iat", json={})
            with pytest.raises(Transient):
                connector._request("POST", f"{base}/broken", bearer="iat", json={})
            with pytest.raises(Exception):  # noqa: B017 - BadRequest: the point is the count
                connector._request("POST", f"{base}/missing", bearer="iat", json={})
        assert {o: count(o) - before[0][o] for o in before[0]} == {"ok": 1, "server_error": 1, "client_error": 1}
        assert timed() - before[1] == 3


def test_connection_failures_are_counted_as_such():
    from inventory.connectors.telemetry import outcome_of

    assert outcome_of(error="ConnectTimeout") == "timeout"
    assert outcome_of(error="ConnectError") == "connection_error"
    assert outcome_of(status=429) == "throttled"
    assert outcome_of(status=302) == "ok"


@pytest.mark.django_db
def test_metrics_outside_the_probe_networks_need_the_token(client):
    assert client.get("/metrics", **OUTSIDER).status_code == 403  # no token configured: probes only
    with override_settings(REGISTRAR_METRICS_TOKEN=TOKEN):
        missing = client.get("/metrics", **OUTSIDER)
        assert missing.status_code == 401 and missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x", **OUTSIDER).status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}", **OUTSIDER).status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **OUTSIDER).status_code == 200
        assert client.get("/metrics", **PROBE).status_code == 200


def test_a_short_metrics_token_is_refused_at_start_up():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEBUG"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "true",
        "SECRET_KEY": "s" * 50,
        "REGISTRAR_ENCRYPTION_KEY": "5bOBxsI9hZ2CcMZSjTuAL2XDfw3wF5VpDJmX5dlQRqY=",
        "DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar",
        "REGISTRAR_METRICS_TOKEN": "short",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "REGISTRAR_METRICS_TOKEN must be at least 32 characters" in result.stderr


COUNT_ONE_CALL = """
from inventory.connectors.telemetry import observe_idp_call
observe_idp_call(connection="shared", kind="rfc7591", method="POST", seconds=0.02, status=201)
"""
EXPOSE = """
from prometheus_client import CollectorRegistry, generate_latest
from portal.metrics import _event_collector
registry = CollectorRegistry(auto_describe=False)
registry.register(_event_collector())
print(generate_latest(registry).decode())
"""


def test_multiprocess_mode_adds_up_the_counts_of_every_process(tmp_path):
    """What gunicorn's workers and a worker's pool do: each process writes its own file, a scrape sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        subprocess.run([sys.executable, "-c", COUNT_ONE_CALL], env=env, cwd=ROOT, check=True, timeout=60)
    assert len(list(tmp_path.glob("*.db"))) >= 3  # one set of files per process
    out = subprocess.run(
        [sys.executable, "-c", EXPOSE], env=env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=60
    ).stdout
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(out) for s in f.samples
    }
    labels = {"connection": "shared", "kind": "rfc7591", "method": "POST"}
    assert samples[("registrar_idp_requests_total", frozenset({**labels, "outcome": "ok"}.items()))] == 3
    assert samples[("registrar_idp_request_duration_seconds_count", frozenset(labels.items()))] == 3
    portal_metrics.clear_multiprocess_dir(str(tmp_path))
    assert not list(tmp_path.glob("*.db"))


def test_a_worker_whose_metrics_port_is_taken_still_starts(tmp_path, monkeypatch, caplog):
    import socket

    from portal.celery import _serve_worker_metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with override_settings(REGISTRAR_WORKER_METRICS_PORT=taken.getsockname()[1]):
            _serve_worker_metrics()  # no exception: the worker goes on without its metrics endpoint
    assert "event=worker_metrics_unavailable" in caplog.text


def test_worker_metrics_without_a_multiprocess_directory_is_a_configuration_error(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ImproperlyConfigured, match="PROMETHEUS_MULTIPROC_DIR"):
        portal_metrics.serve_worker_metrics(port=1, addr="127.0.0.1")
