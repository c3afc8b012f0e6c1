"""Reconciliation (inventory.reconcile + the reconcile_idp command) against a real oidc-provider."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from inventory.choices import ClientState, CreatedVia, OutboxOperation, OutboxStatus
from inventory.connectors.base import ClientSpec
from inventory.lifecycle import client_transition
from inventory.models import Client, OutboxEntry
from inventory.outbox import push
from inventory.outbox.deliver import deliver_client_outbox
from inventory.outbox.push import client_spec
from inventory.reconcile import reconcile_connection
from portal.audit import Actor, events_for
from tests.agents import Agent
from tests.factories import IdPFactory, UserFactory
from tests.provisioning import _private_idp, fresh_connection, fresh_idp, markers_at_idp, register_agent  # noqa: F401

pytestmark = pytest.mark.django_db
OWNER = Actor.system("test-owner")


@pytest.fixture
def person(db):
    return UserFactory(username="rita", roles=["owner"])


def provisioned(idp, owner, **kwargs) -> Client:
    client = register_agent(idp=idp, owner=owner, **kwargs)
    deliver_client_outbox(client.pk)
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    return client


def test_in_sync_reports_an_empty_diff(fresh_connection, person):  # noqa: F811
    for n in range(3):
        provisioned(fresh_connection, person, name=f"a{n}")

    report = reconcile_connection(idp=fresh_connection)

    assert report.is_empty, report.lines()
    assert report.remote_total == 3
    fresh_connection.refresh_from_db()
    assert fresh_connection.last_reconciled_at is not None
    [run] = events_for("idp", fresh_connection.pk)
    assert run.action == "idp.reconciled" and run.after["remote_total"] == 3


def test_scope_drift_is_reported_and_left_alone_without_repair(fresh_connection, person):  # noqa: F811
    client = provisioned(fresh_connection, person, scopes=["tickets:read", "docs:read"])
    connector = push.connector_for(fresh_connection)
    # someone widened the client at the IdP, out of band
    spec = client_spec(client)
    widened = ClientSpec(**{**spec.__dict__, "scopes": ["tickets:read", "docs:read", "repo:write"]})
    connector.update(client.idp_client_id, widened, client.idp_state)

    report = reconcile_connection(idp=fresh_connection)

    assert report.drift == [
        {
            "registration_id": client.registration_id,
            "idp_client_id": client.idp_client_id,
            "differences": {
                "scopes": {
                    "inventory": ["docs:read", "tickets:read"],
                    "idp": ["docs:read", "repo:write", "tickets:read"],
                }
            },
        }
    ]
    assert report.repaired == []
    client.refresh_from_db()
    assert client.drift["scopes"]["idp"] == ["docs:read", "repo:write", "tickets:read"]
    assert not OutboxEntry.objects.filter(client=client, status=OutboxStatus.PENDING).exists()


def test_drift_is_repaired_through_the_outbox_when_the_idp_says_so(fresh_connection, person):  # noqa: F811
    fresh_connection.repair_drift = True
    fresh_connection.save()
    client = provisioned(fresh_connection, person, scopes=["tickets:read"])
    # The client vanished at the IdP (deleted out of band through the admin API).
    push.connector_for(fresh_connection).delete(client.idp_client_id, {})

    report = reconcile_connection(idp=fresh_connection)

    assert report.drift[0]["differences"] == {"missing": True}
    assert report.repaired == [client.registration_id]
    [entry] = OutboxEntry.objects.filter(client=client, status=OutboxStatus.PENDING)
    assert entry.operation == OutboxOperation.UPDATE
    deliver_client_outbox(client.pk)  # UPDATE of a vanished client recreates it
    client.refresh_from_db()
    assert reconcile_connection(idp=fresh_connection).is_empty
    client.refresh_from_db()
    assert client.drift is None


def test_unknown_clients_are_recorded_as_unmanaged(fresh_idp, fresh_connection, person):  # noqa: F811
    shadow = push.connector_for(fresh_connection).create(
        ClientSpec(registrar_id="someone-elses-id", client_name="shadow agent", scopes=["crm:read"], jwks=Agent().jwks)
    )
    # an RFC 7591 client registered without any marker at all
    import httpx

    bare = httpx.post(
        fresh_idp.registration_endpoint,
        timeout=10,
        headers={"Authorization": f"Bearer {fresh_idp.initial_access_token}"},
        json={
            "client_name": "bare",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": Agent().jwks,
        },
    ).json()

    report = reconcile_connection(idp=fresh_connection)

    assert sorted(d["idp_client_id"] for d in report.discovered) == sorted([shadow.client_id, bare["client_id"]])
    row = Client.objects.get(idp=fresh_connection, idp_client_id=shadow.client_id)
    assert (row.managed, row.created_via, row.owner, row.state) == (
        False,
        CreatedVia.DISCOVERED,
        None,
        ClientState.ACTIVE,
    )
    assert row.discovered_at is not None and row.scopes == ["crm:read"] and row.name == "shadow agent"
    assert row.registration_id.startswith("reg_")
    assert events_for("client", row.registration_id).get().action == "client.discovered"
    # a second run does not record them again
    assert reconcile_connection(idp=fresh_connection).is_empty
    assert Client.objects.unmanaged().count() == 2


def test_a_crashed_create_is_adopted_by_its_marker(fresh_idp, fresh_connection, person):  # noqa: F811
    client = register_agent(idp=fresh_connection, owner=person)
    # the IdP answered, the worker died before storing the id, and the entry was dead-lettered since
    remote = push.connector_for(fresh_connection).create(client_spec(client))
    OutboxEntry.objects.filter(client=client).update(status=OutboxStatus.DEAD, attempts=8)
    Client.objects.filter(pk=client.pk).update(sync_failed=True)

    report = reconcile_connection(idp=fresh_connection)

    assert report.adopted == [{"registration_id": client.registration_id, "idp_client_id": remote.client_id}]
    client.refresh_from_db()
    assert (client.idp_client_id, client.state, client.sync_failed) == (remote.client_id, ClientState.ACTIVE, False)
    assert OutboxEntry.objects.get(client=client).status == OutboxStatus.SUPERSEDED
    assert "client.idp_adopted" in [e.action for e in events_for("client", client.registration_id)]
    assert not Client.objects.unmanaged().exists()
    assert reconcile_connection(idp=fresh_connection).is_empty


def test_duplicates_and_ended_clients_are_removed(fresh_idp, fresh_connection, person):  # noqa: F811
    connector = push.connector_for(fresh_connection)
    kept = provisioned(fresh_connection, person, name="kept")
    duplicate = connector.create(client_spec(kept))  # a second copy under the same marker
    ended = register_agent(idp=fresh_connection, owner=person, name="ended")
    orphan_copy = connector.create(client_spec(ended))
    OutboxEntry.objects.filter(client=ended).update(status=OutboxStatus.DEAD)
    client_transition(client=ended, target=ClientState.RETIRED, actor=OWNER)
    OutboxEntry.objects.filter(client=ended, operation=OutboxOperation.DELETE).update(status=OutboxStatus.DEAD)
    retired = provisioned(fresh_connection, person, name="retired")
    client_transition(client=retired, target=ClientState.RETIRED, actor=OWNER)
    OutboxEntry.objects.filter(client=retired, status=OutboxStatus.PENDING).delete()  # as if the DELETE was lost

    report = reconcile_connection(idp=fresh_connection)

    assert sorted(d["idp_client_id"] for d in report.duplicates_deleted) == sorted(
        [duplicate.client_id, orphan_copy.client_id]
    )
    assert report.ended_present == [retired.registration_id]
    assert markers_at_idp(fresh_idp)[kept.registration_id] == 1
    assert markers_at_idp(fresh_idp)[ended.registration_id] == 0
    deliver_client_outbox(retired.pk)
    assert markers_at_idp(fresh_idp)[retired.registration_id] == 0
    assert reconcile_connection(idp=fresh_connection).is_empty


def test_clients_with_pending_deliveries_are_left_to_the_worker(fresh_idp, fresh_connection, person):  # noqa: F811
    client = register_agent(idp=fresh_connection, owner=person)
    push.connector_for(fresh_connection).create(client_spec(client))  # in flight

    report = reconcile_connection(idp=fresh_connection)

    assert report.is_empty and report.skipped_pending == 1
    client.refresh_from_db()
    assert client.idp_client_id is None


def test_dry_run_changes_nothing(fresh_connection, person):  # noqa: F811
    client = provisioned(fresh_connection, person)
    client_transition(client=client, target=ClientState.RETIRED, actor=OWNER)
    OutboxEntry.objects.filter(client=client, status=OutboxStatus.PENDING).delete()
    push.connector_for(fresh_connection).create(ClientSpec(registrar_id="x", client_name="shadow", jwks=Agent().jwks))
    out = StringIO()

    call_command("reconcile_idp", "--idp", fresh_connection.name, "--dry-run", stdout=out)

    text = out.getvalue()
    assert "(dry run)" in text and "unmanaged" in text and client.registration_id in text
    assert not Client.objects.unmanaged().exists()
    assert not OutboxEntry.objects.filter(status=OutboxStatus.PENDING).exists()
    assert not events_for("idp", fresh_connection.pk).exists()


def test_command_reports_in_sync_and_refuses_unknown_names(fresh_connection):  # noqa: F811
    IdPFactory(name="dry")  # dry-run connections hold nothing: always in sync
    out = StringIO()
    call_command("reconcile_idp", stdout=out)
    assert out.getvalue().count("in sync") == 2
    with pytest.raises(CommandError, match="no enabled IdP connection named 'nope'"):
        call_command("reconcile_idp", "--idp", "nope")


def test_an_idp_that_cannot_list_is_an_error_not_a_clean_bill(fresh_connection):  # noqa: F811
    fresh_connection.config = {k: v for k, v in fresh_connection.config.items() if k != "list_endpoint"}
    fresh_connection.save()
    report = reconcile_connection(idp=fresh_connection)
    assert not report.is_empty and "cannot list" in report.errors[0]
    with pytest.raises(CommandError):
        call_command("reconcile_idp", stdout=StringIO())
