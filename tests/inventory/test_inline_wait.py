"""The 201 path's adaptive wait (issue 23, items 1 and 2): a failing or slow IdP's circuit opens and later
registrations answer 202 at once without calling it; one probe after the open period closes it; beyond the
process's K waiters nobody waits; and the inline budget is a total shared by every IdP request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from inventory.choices import ClientState, OutboxStatus
from inventory.connectors import Transient, build_connector
from inventory.connectors.base import BaseConnector, ClientSpec, PushResult, RemoteClient
from inventory.models import Client, OutboxEntry
from inventory.outbox import deliver, push
from inventory.outbox.deliver import INLINE_CIRCUIT, deliver_client_outbox_inline
from portal.circuit import CLOSED, OPEN, Bulkhead, Deadline, within
from tests.factories import IdPFactory, UserFactory
from tests.provisioning import register_agent

pytestmark = pytest.mark.django_db


class Connector(BaseConnector):
    kind = "scripted"

    def __init__(self) -> None:
        super().__init__(config={}, secrets={})
        self.fail = True
        self.calls = 0

    def create(self, spec: ClientSpec) -> PushResult:
        self.calls += 1
        if self.fail:
            raise Transient("scripted: 503")
        return PushResult(client_id=f"id-{spec.registrar_id}", remote_state={"t": "1"})

    def get(self, client_id: str, remote_state: Mapping[str, Any]) -> RemoteClient:
        raise NotImplementedError

    def update(self, client_id, spec, remote_state):
        raise NotImplementedError

    def disable(self, client_id, spec, remote_state):
        raise NotImplementedError

    def delete(self, client_id, remote_state):
        raise NotImplementedError

    def list(self):
        return iter([])

    issuer = "https://scripted.test"
    token_endpoint = "https://scripted.test/token"


@pytest.fixture
def idp():
    return IdPFactory(name="inline-wait-idp")


@pytest.fixture
def connector(monkeypatch):
    connector = Connector()
    monkeypatch.setattr(push, "connector_for", lambda idp, timeout=None: connector)
    monkeypatch.setattr(push, "INLINE_CONNECTORS", push.ConnectorCache())
    return connector


@pytest.fixture
def person():
    return UserFactory(username="inline-owner", roles=["owner"])


def _entry(client: Client) -> OutboxEntry:
    return OutboxEntry.objects.get(client=client)


def test_a_failing_idp_opens_its_circuit_and_later_registrations_do_not_call_it(idp, connector, person):
    for _ in range(INLINE_CIRCUIT.min_samples):
        assert deliver_client_outbox_inline(register_agent(idp=idp, owner=person).pk, timeout=2.0) is False
    assert connector.calls == INLINE_CIRCUIT.min_samples
    assert INLINE_CIRCUIT.state(idp.pk) == OPEN

    client = register_agent(idp=idp, owner=person)
    assert deliver_client_outbox_inline(client.pk, timeout=2.0) is False  # 202 at once
    assert connector.calls == INLINE_CIRCUIT.min_samples  # the IdP was not asked
    entry = _entry(client)
    assert entry.status == OutboxStatus.PENDING and entry.attempts == 0 and entry.claimed_by == ""  # a worker's


def test_after_the_open_period_one_probe_closes_the_circuit(idp, connector, person):
    for _ in range(INLINE_CIRCUIT.min_samples):
        deliver_client_outbox_inline(register_agent(idp=idp, owner=person).pk, timeout=2.0)
    assert INLINE_CIRCUIT.state(idp.pk) == OPEN
    INLINE_CIRCUIT._states[idp.pk].opened_at -= INLINE_CIRCUIT.open_seconds  # the open period has passed
    connector.fail = False

    client = register_agent(idp=idp, owner=person)
    assert deliver_client_outbox_inline(client.pk, timeout=2.0) is True
    assert INLINE_CIRCUIT.state(idp.pk) == CLOSED
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE


def test_one_idps_circuit_leaves_another_idp_alone(idp, connector, person):
    for _ in range(INLINE_CIRCUIT.min_samples):
        deliver_client_outbox_inline(register_agent(idp=idp, owner=person).pk, timeout=2.0)
    other = IdPFactory(name="inline-wait-other")
    connector.fail = False
    calls = connector.calls
    assert deliver_client_outbox_inline(register_agent(idp=other, owner=person).pk, timeout=2.0) is True
    assert connector.calls == calls + 1


def test_beyond_k_waiters_the_registration_does_not_wait(idp, connector, person, monkeypatch):
    monkeypatch.setattr(deliver, "INLINE_BULKHEAD", Bulkhead(0))  # K requests of this process already wait
    connector.fail = False
    client = register_agent(idp=idp, owner=person)
    assert deliver_client_outbox_inline(client.pk, timeout=2.0) is False
    assert connector.calls == 0
    assert _entry(client).attempts == 0


def test_the_inline_budget_is_a_total_for_every_idp_request():
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        return httpx.Response(201, json={"client_id": "x"})

    connector = build_connector(
        "rfc7591",
        {
            "issuer": "https://idp.test",
            "registration_endpoint": "https://idp.test/reg",
            "token_endpoint": "https://idp.test/t",
        },
        {"initial_access_token": "t"},
        10.0,
        transport=httpx.MockTransport(handler),
    )
    now = [100.0]
    deadline = Deadline(2.0, clock=lambda: now[0])
    with within(deadline):
        connector._request("POST", "https://idp.test/reg", bearer="t", json={})
        now[0] += 1.5  # the first request took 1.5 s
        connector._request("POST", "https://idp.test/reg", bearer="t", json={})
        now[0] += 1.0
        with pytest.raises(Transient) as spent:
            connector._request("POST", "https://idp.test/reg", bearer="t", json={})
    assert seen == [pytest.approx(2.0), pytest.approx(0.5)]  # what was left, never a fresh budget
    assert spent.value.reached_idp is False and "budget is spent" in str(spent.value)
    connector._request("POST", "https://idp.test/reg", bearer="t", json={})  # outside an inline wait: its own timeout
    assert seen[-1] == pytest.approx(10.0)


def test_a_database_lost_after_the_delivery_defers_it_with_one_warning_and_no_stack_trace(
    idp, connector, person, monkeypatch, caplog
):
    """The fault suite's finding: the connection broke between the IdP's answer and the read of the client's
    state; that read raised outside the handler and the registration path logged a stack trace per request."""
    from django.db import OperationalError

    connector.fail = False
    client = register_agent(idp=idp, owner=person)
    real_filter = deliver.Client.objects.filter

    def filter_after_delivery(*args, **kwargs):
        if kwargs.get("state") == ClientState.ACTIVE:  # the read after the delivery
            raise OperationalError("the connection is closed")
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(deliver.Client.objects, "filter", filter_after_delivery)
    with caplog.at_level("WARNING", logger="inventory.outbox.deliver"):
        assert deliver_client_outbox_inline(client.pk, timeout=2.0) is False

    [record] = [r for r in caplog.records if r.name == "inventory.outbox.deliver"]
    assert "inline_delivery_deferred" in record.getMessage() and "database_unavailable" in record.getMessage()
    assert record.exc_info is None
    assert connector.calls == 1  # delivered once; a worker sees it active and does nothing more
