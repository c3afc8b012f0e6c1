"""GET /api/v1/requests/ and POST /api/v1/requests/<id>/approve|deny: same rules as the queue."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals.choices import RequestState
from approvals.models import Decision, RegistrationRequest
from inventory.choices import ClientState, RiskTier
from inventory.models import Client
from portal.crypto import hash_token
from portal.models import ApiToken
from tests.factories import UserFactory


def api_for(user) -> APIClient:
    plaintext = f"api_test_{user.username}"
    ApiToken.objects.create(user=user, name="test", prefix=plaintext[:12], token_hash=hash_token(plaintext))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


def _state(req):
    fresh = RegistrationRequest.objects.get(pk=req.pk)
    return fresh.state, Decision.objects.filter(request=req).count(), fresh.client_id


@pytest.fixture
def bob_api(approver):
    return api_for(approver)


def test_list_is_filterable(bob_api, make_request):
    make_request(RiskTier.HIGH, client_name="deploy-bot")
    make_request(RiskTier.MEDIUM, client_name="ticket-bot")
    make_request(RiskTier.MEDIUM, client_name="gone-bot", state=RequestState.DENIED)
    data = bob_api.get("/api/v1/requests/").json()
    assert len(data["results"]) == 3 and data["next"] is None and "count" not in data  # keyset: no count
    assert data["results"][0]["client_name"] == "deploy-bot"  # high first
    names = {r["client_name"] for r in bob_api.get("/api/v1/requests/", {"tier": "medium"}).json()["results"]}
    assert names == {"ticket-bot", "gone-bot"}
    names = {r["client_name"] for r in bob_api.get("/api/v1/requests/", {"state": "pending"}).json()["results"]}
    assert names == {"deploy-bot", "ticket-bot"}
    names = {r["client_name"] for r in bob_api.get("/api/v1/requests/", {"scope": "repo:write"}).json()["results"]}
    assert names == {"deploy-bot"}
    assert len(bob_api.get("/api/v1/requests/", {"q": "ticket"}).json()["results"]) == 1
    assert len(bob_api.get("/api/v1/requests/", {"owner": "olivia"}).json()["results"]) == 3


def test_security_reads_but_cannot_decide(security_user, medium_request):
    api = api_for(security_user)
    assert api.get("/api/v1/requests/").status_code == 200
    response = api.post(f"/api/v1/requests/{medium_request.public_id}/approve/", {"reason": "x"}, format="json")
    assert response.status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_owner_cannot_list_or_decide(owner, medium_request):
    api = api_for(owner)
    assert api.get("/api/v1/requests/").status_code == 403
    assert api.post(f"/api/v1/requests/{medium_request.public_id}/deny/", {"reason": "x"}).status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_anonymous_is_refused(medium_request):
    assert APIClient().get("/api/v1/requests/").status_code in (401, 403)


def test_four_eyes_over_the_api(bob_api, approver2, high_request):
    url = f"/api/v1/requests/{high_request.public_id}/approve/"
    first = bob_api.post(url, {"reason": "needed", "scopes": ["repo:write"], "ttl_seconds": 1800}, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["state"] == "pending" and first.json()["approvals_so_far"] == 1
    assert first.json()["granted_scopes"] == ["repo:write"]
    again = bob_api.post(url, {"reason": "again"}, format="json")
    assert again.status_code == 409
    final = api_for(approver2).post(url, {"reason": "agreed"}, format="json")
    assert final.status_code == 200
    body = final.json()
    assert body["state"] == "approved" and body["client_id"] == high_request.public_id
    client = Client.objects.get(registration_id=high_request.public_id)
    assert client.state == ClientState.PROVISIONING and client.scopes == ["repo:write"]
    assert [d["approver"] for d in body["decisions"]] == ["bob", "carol"]


def test_deny_over_the_api(bob_api, medium_request):
    response = bob_api.post(f"/api/v1/requests/{medium_request.public_id}/deny/", {"reason": "no"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "denied"
    again = api_for(UserFactory(username="dan", roles=["approver"])).post(
        f"/api/v1/requests/{medium_request.public_id}/deny/", {"reason": "no"}, format="json"
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("action", "payload", "status"),
    [
        ("deny", {}, 400),
        ("deny", {"reason": ""}, 400),
        ("approve", {"reason": ""}, 400),  # high tier needs a reason
        ("approve", {"reason": "x", "scopes": ["repo:write", "db:prod:read"]}, 400),
        ("approve", {"reason": "x", "ttl_seconds": 10**7}, 400),
    ],
)
def test_bad_input_changes_nothing(bob_api, high_request, action, payload, status):
    response = bob_api.post(f"/api/v1/requests/{high_request.public_id}/{action}/", payload, format="json")
    assert response.status_code == status, response.content
    assert _state(high_request) == (RequestState.PENDING, 0, None)


def test_party_to_the_request_is_403(approver, make_request):
    req = make_request(owner=approver)
    response = api_for(approver).post(f"/api/v1/requests/{req.public_id}/approve/", {"reason": "x"}, format="json")
    assert response.status_code == 403
    assert _state(req) == (RequestState.PENDING, 0, None)


def test_service_account_token_cannot_approve(medium_request):
    robot = UserFactory(username="robot", roles=["approver"], is_service_account=True)
    response = api_for(robot).post(f"/api/v1/requests/{medium_request.public_id}/approve/", {}, format="json")
    assert response.status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_session_post_without_csrf_is_refused(approver, medium_request):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(approver)
    response = client.post(f"/api/v1/requests/{medium_request.public_id}/approve/", {}, format="json")
    assert response.status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_unknown_request_is_404(bob_api):
    assert bob_api.post("/api/v1/requests/reg_nope/deny/", {"reason": "x"}, format="json").status_code == 404


def test_list_query_count_is_constant(bob_api, make_request):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        make_request()
    with CaptureQueriesContext(connection) as small:
        bob_api.get("/api/v1/requests/")
    for _ in range(20):
        make_request(RiskTier.HIGH)
    with CaptureQueriesContext(connection) as large:
        assert len(bob_api.get("/api/v1/requests/").json()["results"]) == 23
    assert len(large.captured_queries) == len(small.captured_queries)


def test_schema_documents_the_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/requests/{id}/approve/" in schema or "/api/v1/requests/{public_id}/approve/" in schema
    assert "/api/v1/requests/{public_id}/deny/" in schema or "/api/v1/requests/{id}/deny/" in schema
