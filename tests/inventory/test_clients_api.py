"""GET /api/v1/clients/ (shared FilterSet, keyset pages), the report endpoints, the OpenAPI schema."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from inventory.choices import RiskTier
from inventory.models import Client
from portal.crypto import hash_token
from portal.models import ApiToken
from tests.factories import ClientFactory, UserFactory
from tests.inventory.security_data import bulk_clients

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_reports(settings):
    """Each test measures its own data: no cached dashboard/report snapshot from another test."""
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def data(idp, owner, catalogue):
    other = UserFactory(username="other-owner", roles=["owner"])
    return {
        "mine": ClientFactory(idp=idp, owner=owner, name="mine-high", risk_tier=RiskTier.HIGH, scopes=["repo:write"]),
        "mine2": ClientFactory(idp=idp, owner=owner, name="mine-low"),
        "theirs": ClientFactory(idp=idp, owner=other, name="theirs-low", purpose="reads the wiki"),
    }


def names(response) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    return sorted(c["name"] for c in response.json()["results"])


def test_security_lists_all_with_the_shared_filters(api, security_user, data):
    api.force_authenticate(security_user)
    assert names(api.get("/api/v1/clients/")) == ["mine-high", "mine-low", "theirs-low"]
    assert names(api.get("/api/v1/clients/", {"tier": "high"})) == ["mine-high"]
    assert names(api.get("/api/v1/clients/", {"owner": "other-owner"})) == ["theirs-low"]
    assert names(api.get("/api/v1/clients/", {"scope": "repo:write"})) == ["mine-high"]
    detail = api.get(f"/api/v1/clients/{data['mine'].registration_id}/").json()
    assert detail["owner"] == "olivia" and detail["scopes"] == ["repo:write"] and detail["risk_tier"] == "high"
    assert "idp_state" not in detail
    assert names(api.get("/api/v1/clients/", {"q": "theirs"})) == ["theirs-low"]


@pytest.mark.postgres_only  # trigram similarity; SQLite (make run) matches substrings
def test_the_shared_search_filter_tolerates_typos(api, security_user, data):
    api.force_authenticate(security_user)
    assert names(api.get("/api/v1/clients/", {"q": "theirz"})) == ["theirs-low"]  # typo, trigram


def test_bad_filter_is_400(api, security_user, data):
    api.force_authenticate(security_user)
    response = api.get("/api/v1/clients/", {"tier": "cosmic"})
    assert response.status_code == 400
    assert "tier" in response.json()


def test_owner_sees_own_clients_only(api, owner, data):
    api.force_authenticate(owner)
    assert names(api.get("/api/v1/clients/")) == ["mine-high", "mine-low"]
    assert api.get(f"/api/v1/clients/{data['theirs'].registration_id}/").status_code == 404
    assert api.get("/api/v1/reports/sprawl").status_code == 403
    assert api.get("/api/v1/reports/frameworks").status_code == 403


def test_security_is_read_only(api, security_user, data):
    api.force_authenticate(security_user)
    reg = data["mine"].registration_id
    assert api.post("/api/v1/clients/", {"name": "x"}, format="json").status_code == 403
    assert api.patch(f"/api/v1/clients/{reg}/", {"name": "x"}, format="json").status_code == 403
    assert api.delete(f"/api/v1/clients/{reg}/").status_code == 403
    assert Client.objects.get(pk=data["mine"].pk).name == "mine-high"


def test_api_token_authentication(api, security_user, data):
    ApiToken.objects.create(user=security_user, name="ci", prefix="tok_test", token_hash=hash_token("tok_test_secret"))
    api.credentials(HTTP_AUTHORIZATION="Token tok_test_secret")
    assert len(api.get("/api/v1/clients/").json()["results"]) == 3
    api.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert api.get("/api/v1/clients/").status_code == 401


def test_keyset_pages_through_the_api(api, security_user, idp):
    bulk_clients(25, idp=idp, owners=[UserFactory(username="bulk-api")], teams=[])
    api.force_authenticate(security_user)
    seen, url = [], "/api/v1/clients/?page_size=10&sort=name"
    while url:
        body = api.get(url).json()
        seen += [c["registration_id"] for c in body["results"]]
        url = body["next"]
    assert len(seen) == len(set(seen)) == 25
    assert seen == sorted(seen, key=lambda r: Client.objects.get(registration_id=r).name)
    back = api.get(body["previous"]).json()
    assert len(back["results"]) == 10


def test_evidence_action(api, security_user, data):
    api.force_authenticate(security_user)
    pack = api.get(f"/api/v1/clients/{data['mine'].registration_id}/evidence/").json()
    assert pack["client"]["registration_id"] == data["mine"].registration_id
    assert pack["scopes"][0]["sensitivity"] == "high"


def test_sprawl_report(api, security_user, data):
    api.force_authenticate(security_user)
    body = api.get("/api/v1/reports/sprawl").json()
    assert body["totals"]["live"] == 3
    assert {"label": "high", "count": 1} in body["by_tier"]
    assert body["top_owners"][0] == {"label": "olivia", "count": 2}
    assert len(body["live_series"]["values"]) == 90


def test_frameworks_report(api, security_user, data):
    api.force_authenticate(security_user)
    body = api.get("/api/v1/reports/frameworks").json()
    controls = {c["key"]: c for c in body["controls"]}
    assert controls["owner_bound"]["status"] == "pass" and controls["owner_bound"]["total"] == 3
    assert controls["human_approval_high_tier"]["failing"] == 1
    frameworks = {f["key"]: f for f in body["frameworks"]}
    assert [i["id"] for i in frameworks["owasp_nhi_2025"]["items"]][:2] == ["NHI1:2025", "NHI2:2025"]


def test_openapi_schema_names_the_endpoints(api, security_user):
    api.force_authenticate(security_user)
    schema = api.get("/api/schema/", {"format": "json"}).json()
    for path in (
        "/api/v1/clients/",
        "/api/v1/clients/{registration_id}/",
        "/api/v1/reports/sprawl",
        "/api/v1/reports/frameworks",
    ):
        assert path in schema["paths"], path
    params = {p["name"] for p in schema["paths"]["/api/v1/clients/"]["get"]["parameters"]}
    assert {
        "q",
        "state",
        "tier",
        "idp",
        "owner",
        "team",
        "scope",
        "expires_before",
        "orphaned",
        "after",
        "sort",
    } <= params
