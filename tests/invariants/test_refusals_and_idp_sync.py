"""Invariants of issue 13, items 11 and 12, tried on every path that could break them.

11. **Refusals are counted, not chained.** No refused credential on the registration API — whatever the
    credential, whichever endpoint, whoever's browser session rides along — appends to the audit chain on the
    request path; after the fold, the chain holds exactly one event per source, minute, action and credential
    prefix, and the counts add up to the refusals. On PostgreSQL and on SQLite (the demo database).
12. **An IdP without a listing is never lied to or about.** Whatever path changes a client there (the agent's
    RFC 7591/7592 calls, an approver's approval, owner actions, break glass, the expiry sweep): a crash between
    the IdP's answer and Registrar's commit leaves neither a duplicate nor a stale management token, and a
    management call the IdP refuses (401) is a sync failure a person sees — never "already gone".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db.models import Sum
from django.utils import timezone

from approvals.models import RegistrationRequest, UnauthorizedTally
from approvals.services import request_approve
from inventory.breakglass import breakglass_execute
from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.connectors import AccessDenied
from inventory.lifecycle import client_retire, client_rotate_key, client_suspend
from inventory.models import Client, OutboxEntry
from inventory.outbox import push, record
from inventory.outbox.deliver import deliver_client_outbox
from inventory.outbox.push import client_spec
from inventory.sweeps import sweep_expired
from portal.models import AuditEvent, AuditHead
from tests.agents import Agent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    PUBLIC_JWKS,
    _fresh_limits_and_policy,
    call,
    fold_refusals,
    low_body,
    make_token,
    path_of,
    post,
)
from tests.provisioning import (  # noqa: F401 - fixtures
    _unlisted_idp,
    markers_at_idp,
    unlisted_connection,
    unlisted_idp,
)

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


# === 11. refusals are counted, not chained ==================================================================

ROLES = [None, "owner", "approver", "security", "admin"]


def _chain() -> tuple[int, tuple | None]:
    head = AuditHead.objects.filter(id=1).values_list("last_event_id", "last_hash").first()
    return AuditEvent.objects.count(), tuple(head) if head else None


def _refusals() -> int:
    return UnauthorizedTally.objects.aggregate(n=Sum("count"))["n"] or 0


@pytest.fixture
def registered(client, catalogue, idp, owner):
    """A live registration (dry-run IdP) whose id a stranger may aim at: (path, its registration access token)."""
    _, plaintext = make_token(owner)
    body = post(client, low_body(scope="tickets:read"), plaintext).json()
    return path_of(body["registration_client_uri"]), body["registration_access_token"]


def _refused_requests(registered, owner):
    """Every way to be refused a credential on /oauth2/register and its RFC 7592 URIs: (label, send)."""
    uri, rat = registered
    revoked = make_token(owner, revoked_at=timezone.now())[1]
    expired = make_token(owner, expires_at=timezone.now() - timedelta(seconds=1))[1]
    used_up = make_token(owner, max_uses=1, uses=1)[1]
    return [
        ("no credential", lambda c: post(c, low_body())),
        ("unknown initial access token", lambda c: post(c, low_body(), "rat_unknown_000000000000")),
        ("revoked token", lambda c: post(c, low_body(), revoked)),
        ("expired token", lambda c: post(c, low_body(), expired)),
        ("used-up token", lambda c: post(c, low_body(), used_up)),
        ("unknown parent token (spawn)", lambda c: post(c, low_body(), "rrat_unknown_00000000000")),
        ("bad software statement", lambda c: post(c, low_body(software_statement="not-a-jwt"))),
        ("GET with a guessed token", lambda c: call(c, "GET", uri, "rrat_guessed_0000000000")),
        ("PUT with a guessed token", lambda c: call(c, "PUT", uri, "rrat_guessed_0000000000", low_body())),
        ("DELETE with a guessed token", lambda c: call(c, "DELETE", uri, "rrat_guessed_0000000000")),
        ("GET of an unknown registration", lambda c: call(c, "GET", "/oauth2/register/reg_nope", rat)),
    ]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
def test_no_refusal_on_any_path_or_session_touches_the_audit_chain_until_the_fold(
    client, registered, owner, approver, security_user, admin_user, role
):
    users = {"owner": owner, "approver": approver, "security": security_user, "admin": admin_user}
    if role:
        client.force_login(users[role])  # a session cookie is no credential on the registration API
    cases = _refused_requests(registered, owner)
    chain_before, refusals_before = _chain(), _refusals()

    for label, send in cases:
        response = send(client)
        assert response.status_code in (400, 401), (label, response.status_code)
        assert _chain() == chain_before, f"{label}: the request path appended to the audit chain"
    assert _refusals() - refusals_before == len(cases)

    events = fold_refusals()
    assert sum(e.after["count"] for e in events) == len(cases)
    keys = [(e.after["source_ip"], e.after["minute"], e.action, e.after["credential_prefix"]) for e in events]
    assert len(keys) == len(set(keys)), "two events for one source, minute, action and prefix"
    assert {e.action for e in events} == {"registration.unauthorized", "registration.statement_rejected"}
    assert not UnauthorizedTally.objects.exists()


def test_repeated_refusals_from_one_source_are_one_event_with_the_count(client, registered, monkeypatch):
    # All 25 arrive within one minute (the clock is held at its middle): on a slow machine the real clock
    # crossed a minute boundary mid-loop and the refusals were, rightly, two events.
    middle = timezone.now().replace(second=30, microsecond=0) - timedelta(minutes=1)
    monkeypatch.setattr("approvals.unauthorized.timezone", SimpleNamespace(now=lambda: middle))
    for _ in range(25):
        assert post(client, low_body(), "rat_unknown_000000000000").status_code == 401
    monkeypatch.undo()
    [event] = fold_refusals()
    assert event.after["count"] == 25
    assert event.after["minute"].startswith(middle.replace(second=0).isoformat()[:16])


SQLITE_SCRIPT = r"""
import json, django
django.setup()
from datetime import timedelta
from django.test import Client as HttpClient
from django.utils import timezone
from approvals.unauthorized import unauthorized_fold
from portal.audit import verify_chain
from portal.models import AuditEvent

http = HttpClient()
statuses = set()
for n in range(12):
    bearer = "rat_unknown_000000000000" if n % 3 else f"rat_{n:02d}_other_{n:014d}"
    response = http.post("/oauth2/register", json.dumps({"purpose": "x"}), content_type="application/json",
                         HTTP_AUTHORIZATION="Bearer " + bearer, REMOTE_ADDR=f"192.0.2.{n % 2}")
    statuses.add(response.status_code)
chained_on_request_path = AuditEvent.objects.count()
folded = unauthorized_fold(now=timezone.now() + timedelta(minutes=2))
events = list(AuditEvent.objects.values("action", "after"))
print(json.dumps({"statuses": sorted(statuses), "chained": chained_on_request_path, "folded": folded,
                  "counts": sorted(e["after"]["count"] for e in events), "chain": verify_chain()[1] is None}))
"""


@pytest.mark.slow
def test_on_sqlite_refusals_are_counted_then_folded_too(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "true",
        "REGISTRAR_DATA_DIR": str(tmp_path),
        "REGISTRAR_EMBEDDED": "1",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "ERROR",
    }
    run = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 600}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], **run)
    assert migrate.returncode == 0, migrate.stderr
    result = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], **run)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["statuses"] == [401] and out["chained"] == 0
    # two sources; per source one repeated unknown token (4 each) and two distinct ones (1 each)
    assert out["folded"] == 6 and out["counts"] == [1, 1, 1, 1, 4, 4] and out["chain"] is True


# === 12. an IdP without a listing ===========================================================================


class Crash(Exception):
    """The worker dies after the IdP answered, before the outcome is recorded."""


def _crash_once(monkeypatch) -> None:
    real = record.record_delivered
    crashed: list[bool] = []

    def succeed(claim, result):
        if not crashed:
            crashed.append(True)
            raise Crash("killed after the IdP answered")
        return real(claim, result)

    monkeypatch.setattr(record, "record_delivered", succeed)


def _deliver_through_a_crash(client: Client, monkeypatch) -> None:
    _crash_once(monkeypatch)
    with pytest.raises(Crash):
        deliver_client_outbox(client.pk)
    OutboxEntry.objects.filter(client=client, status=OutboxStatus.PENDING).update(
        claimed_until=timezone.now() - timedelta(seconds=1), next_attempt_at=timezone.now()
    )  # the killed worker's lease runs out
    deliver_client_outbox(client.pk)


def _agent_registers(http, owner, connection, *, scope="tickets:read docs:read"):
    """The agent's RFC 7591 call with a token bound to the unlisted IdP: (client, manage path, its token)."""
    _, plaintext = make_token(owner, idp=connection)
    response = post(http, low_body(scope=scope), plaintext)
    assert response.status_code == 202, response.content  # created by a worker, not inline (docs/connectors.md)
    body = response.json()
    client = RegistrationRequest.objects.get(public_id=body["registration_client_uri"].rsplit("/", 1)[-1]).client
    return client, path_of(body["registration_client_uri"]), body["registration_access_token"]


def _manageable(connection, client: Client) -> bool:
    client.refresh_from_db()
    try:
        push.connector_for(connection).get(client.idp_client_id, client.idp_state)
    except AccessDenied:
        return False
    return True


def _pending_request(http, owner, connection):
    _, plaintext = make_token(owner, idp=connection)
    response = post(http, low_body(scope="tickets:write"), plaintext)  # medium: one approver
    assert response.status_code == 202 and response.json()["status"] == "pending"
    return RegistrationRequest.objects.get(public_id=response.json()["registration_client_uri"].rsplit("/", 1)[-1])


CREATING_PATHS = ["agent registration (auto-approved)", "approver approves"]


@pytest.mark.parametrize("path", CREATING_PATHS)
def test_no_creating_path_leaves_a_duplicate_after_a_crash(
    path,
    client,
    catalogue,
    owner,
    approver,
    unlisted_connection,
    unlisted_idp,
    monkeypatch,  # noqa: F811
):
    if path == "approver approves":
        request = request_approve(
            reg_request=_pending_request(client, owner, unlisted_connection), approver=approver, reason="fine"
        )
        agent = request.client
    else:
        agent = _agent_registers(client, owner, unlisted_connection)[0]

    _deliver_through_a_crash(agent, monkeypatch)

    agent.refresh_from_db()
    assert agent.state == ClientState.ACTIVE
    assert markers_at_idp(unlisted_idp)[agent.registration_id] == 1
    assert _manageable(unlisted_connection, agent)


def _agent_put(http, agent, uri, rat, owner, approver, security_user):
    response = call(http, "PUT", uri, rat, low_body(scope="tickets:read", client_id=agent.idp_client_id))
    assert response.status_code == 200, response.content


def _owner_rotates_key(http, agent, uri, rat, owner, approver, security_user):
    client_rotate_key(client=agent, jwks=Agent().jwks, user=owner, reason="scheduled rotation")


UPDATING_PATHS = {"agent PUT narrows (RFC 7592)": _agent_put, "owner rotates the key": _owner_rotates_key}


@pytest.mark.parametrize("path", UPDATING_PATHS)
def test_no_updating_path_leaves_a_stale_management_token_after_a_crash(
    path,
    client,
    catalogue,
    owner,
    approver,
    security_user,
    unlisted_connection,
    unlisted_idp,
    monkeypatch,  # noqa: F811
):
    agent, uri, rat = _agent_registers(client, owner, unlisted_connection)
    deliver_client_outbox(agent.pk)
    agent.refresh_from_db()
    before = agent.idp_state["registration_access_token"]

    UPDATING_PATHS[path](client, agent, uri, rat, owner, approver, security_user)
    assert OutboxEntry.objects.filter(client=agent, operation=OutboxOperation.UPDATE).exists()
    _deliver_through_a_crash(agent, monkeypatch)

    agent.refresh_from_db()
    assert agent.idp_state["registration_access_token"] != before  # the rotated token is the one stored
    assert not OutboxEntry.objects.filter(client=agent, status__in=[OutboxStatus.PENDING, OutboxStatus.DEAD]).exists()
    assert _manageable(unlisted_connection, agent)
    assert markers_at_idp(unlisted_idp)[agent.registration_id] == 1  # never recreated


def _agent_delete(http, agent, uri, rat, owner, approver, security_user):
    assert call(http, "DELETE", uri, rat).status_code == 204


def _owner_retires(http, agent, uri, rat, owner, approver, security_user):
    client_retire(client=agent, user=owner, reason="no longer needed")


def _owner_suspends(http, agent, uri, rat, owner, approver, security_user):
    client_suspend(client=agent, user=owner, reason="pausing it")


def _break_glass(action):
    def run(http, agent, uri, rat, owner, approver, security_user):
        breakglass_execute(
            user=security_user, scope="lineage", value=agent.registration_id, action=action, reason="containment drill"
        )

    return run


def _sweep_expires(http, agent, uri, rat, owner, approver, security_user):
    Client.objects.filter(pk=agent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert sweep_expired().counts.get("expired") == 1


ENDING_PATHS = {
    "agent DELETE (RFC 7592)": _agent_delete,
    "owner retires": _owner_retires,
    "owner suspends": _owner_suspends,
    "security break glass: suspend": _break_glass("suspend"),
    "security break glass: retire": _break_glass("retire"),
    "expiry sweep": _sweep_expires,
}


@pytest.mark.parametrize("path", ENDING_PATHS)
def test_no_path_records_a_client_as_gone_when_the_idp_refused_the_management_token(
    path,
    client,
    catalogue,
    owner,
    approver,
    security_user,
    unlisted_connection,
    unlisted_idp,  # noqa: F811
):
    agent, uri, rat = _agent_registers(client, owner, unlisted_connection)
    deliver_client_outbox(agent.pk)
    agent.refresh_from_db()
    # Someone used the client's management token at the IdP behind Registrar's back: the IdP rotated it.
    push.connector_for(unlisted_connection).update(agent.idp_client_id, client_spec(agent), agent.idp_state)

    ENDING_PATHS[path](client, agent, uri, rat, owner, approver, security_user)
    deliver_client_outbox(agent.pk)

    agent.refresh_from_db()
    [ending] = OutboxEntry.objects.filter(client=agent).exclude(operation=OutboxOperation.CREATE)
    assert ending.operation in (OutboxOperation.DISABLE, OutboxOperation.DELETE)
    assert ending.status == OutboxStatus.DEAD and ending.last_error.startswith("AccessDenied:"), ending.last_error
    assert agent.sync_failed is True
    assert agent.idp_disabled_at is None and not (agent.idp_state or {}).get("deleted")
    assert markers_at_idp(unlisted_idp)[agent.registration_id] == 1  # it is still there, and Registrar says so
    assert AuditEvent.objects.filter(action="outbox.dead_lettered", object_id=agent.registration_id).count() == 1
