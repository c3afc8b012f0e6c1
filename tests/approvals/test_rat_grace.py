"""RFC 7592 registration access tokens: rotation with a grace, and reuse detection (issue 17, item 2)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from approvals.models import RegistrationRequest
from inventory.models import Client
from portal.crypto import hash_token
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401
    _fresh_limits_and_policy,
    call,
    low_body,
    make_token,
    path_of,
    post,
)


@pytest.fixture
def registered(client, catalogue, idp, owner):
    _, initial = make_token(owner)
    response = post(client, low_body(scope="tickets:read docs:read", requested_ttl=7200), initial)
    assert response.status_code == 201, response.content
    body = response.json()
    return path_of(body["registration_client_uri"]), body["registration_access_token"]


def _get(client, uri, token):
    response = call(client, "GET", uri, token)
    return response.status_code, response.json().get("registration_access_token"), response.json()


def _reuse_events() -> int:
    return AuditEvent.objects.filter(action="registration.token_reuse").count()


@pytest.mark.django_db
def test_a_lost_response_is_survived_inside_the_grace(client, registered):
    uri, t1 = registered
    status, t2, _ = _get(client, uri, t1)
    assert status == 200  # ...and this response is "lost": the agent never sees t2
    status, t3, _ = _get(client, uri, t1)
    assert status == 200 and t3 not in (t1, t2)
    status, t4, _ = _get(client, uri, t3)  # the new token's first use ends the old one's grace
    assert status == 200
    assert _reuse_events() == 0
    assert _get(client, uri, t4)[0] == 200


@pytest.mark.django_db
def test_a_superseded_token_is_invalid_but_no_theft(client, registered):
    uri, t1 = registered
    _, t2, _ = _get(client, uri, t1)  # lost
    _, t3, _ = _get(client, uri, t1)  # t2, never used, is superseded
    status, _, body = _get(client, uri, t2)
    assert status == 401 and "not valid for this registration" in body["error_description"]
    assert _reuse_events() == 0
    assert _get(client, uri, t3)[0] == 200


@pytest.mark.django_db
def test_an_update_needs_the_current_token_so_a_replay_applies_once(client, registered):
    uri, t1 = registered
    narrowed = low_body(scope="tickets:read", requested_ttl=1800)
    first = call(client, "PUT", uri, t1, narrowed)
    assert first.status_code == 200, first.content
    events = AuditEvent.objects.filter(action="client.narrow").count()
    replay = call(client, "PUT", uri, t1, narrowed)
    assert replay.status_code == 401 and "an update needs the current one" in replay.json()["error_description"]
    assert AuditEvent.objects.filter(action="client.narrow").count() == events == 1
    assert _reuse_events() == 0
    # the lost response is recovered by a read with the old token, inside its grace
    status, t3, _ = _get(client, uri, t1)
    assert status == 200 and call(client, "PUT", uri, t3, narrowed).status_code == 200


@pytest.mark.django_db
def test_reuse_after_the_new_token_was_used_is_refused_audited_and_revokes_both(client, registered):
    uri, t1 = registered
    _, t2, _ = _get(client, uri, t1)
    _, t3, _ = _get(client, uri, t2)  # t2 used: t1's grace is over
    client_before = Client.objects.values().get()
    status, _, body = _get(client, uri, t1)
    assert status == 401 and body["error"] == "invalid_token" and "possible theft" in body["error_description"]
    event = AuditEvent.objects.get(action="registration.token_reuse")
    assert event.object_id == RegistrationRequest.objects.get().public_id
    assert "possible theft" in event.reason
    # both the current (t3) and the previous (t2) token are revoked
    assert _get(client, uri, t3)[0] == 401
    assert _get(client, uri, t2)[0] == 401
    reg = RegistrationRequest.objects.get()
    assert reg.registration_access_token_hash is None and reg.rat_previous_hash == ""
    assert Client.objects.values().get() == client_before  # the client itself is untouched
    # a replay loop cannot flood the audit log: one event for the revocation
    assert _get(client, uri, t1)[0] == 401
    assert _reuse_events() == 1


@pytest.mark.django_db
def test_reuse_after_the_grace_ended_is_refused_and_revokes_both(client, registered):
    uri, t1 = registered
    _, t2, _ = _get(client, uri, t1)
    RegistrationRequest.objects.update(rat_previous_until=timezone.now() - timedelta(seconds=1))
    status, _, body = _get(client, uri, t1)
    assert status == 401 and "already used" in body["error_description"]
    assert _reuse_events() == 1
    assert _get(client, uri, t2)[0] == 401


@pytest.mark.django_db
def test_the_grace_is_a_setting(client, registered, settings):
    settings.REGISTRAR_RAT_GRACE_SECONDS = 600
    uri, t1 = registered
    before = timezone.now()
    _get(client, uri, t1)
    until = RegistrationRequest.objects.get().rat_previous_until
    assert before + timedelta(seconds=599) < until <= timezone.now() + timedelta(seconds=600)


@pytest.mark.django_db
def test_an_unknown_token_is_a_plain_401_and_revokes_nothing(client, registered):
    uri, t1 = registered
    status, _, body = _get(client, uri, "rrat_not-a-token")
    assert status == 401 and "not valid for this registration" in body["error_description"]
    assert _reuse_events() == 0
    assert _get(client, uri, t1)[0] == 200


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_uses_of_one_token_at_once(live_server, catalogue, idp, owner):
    """Both are served (the loser of the rotation finds its token the previous one, inside the grace); the row
    ends with one current token, the presented one as previous, and no reuse was flagged."""
    _, initial = make_token(owner)
    with requests.Session() as http:
        body = http.post(
            f"{live_server.url}/oauth2/register",
            json=low_body(),
            headers={"Authorization": f"Bearer {initial}"},
            timeout=10,
        ).json()
    uri, t1 = body["registration_client_uri"], body["registration_access_token"]

    def read(_: int):
        with requests.Session() as http:
            response = http.get(uri, headers={"Authorization": f"Bearer {t1}"}, timeout=30)
            return response.status_code, response.json().get("registration_access_token")

    for _round in range(3):
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(read, range(4)))
        assert [status for status, _ in results] == [200] * 4, results
        tokens = {token for _, token in results}
        assert len(tokens) == 4
        reg = RegistrationRequest.objects.get()
        assert reg.rat_previous_hash == hash_token(t1)
        assert reg.registration_access_token_hash in {hash_token(t) for t in tokens}
        assert _reuse_events() == 0
