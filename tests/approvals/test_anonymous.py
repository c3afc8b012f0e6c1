"""Anonymous registration under an admin's profile, coalescing and per-software limits (issue 17, items 3-5)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from approvals.models import AnonymousProfile, RegistrationRequest, UnauthorizedTally
from inventory.choices import ClientState, CreatedVia
from inventory.models import Client
from portal.models import AuditEvent
from tests.approvals.intake_support import PUBLIC_JWKS, _fresh_limits_and_policy, counts, post  # noqa: F401

MCP_BODY = {
    "client_name": "Example MCP Client",
    "redirect_uris": ["http://127.0.0.1:33418/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "application_type": "native",
    "scope": "tickets:read",
}


@pytest.fixture
def profile(db, idp, owner, team, catalogue):
    return AnonymousProfile.objects.create(
        idp=idp,
        name="mcp",
        enabled=True,
        owner=owner,
        team=team,
        allowed_scopes=["tickets:read", "docs:read"],
        redirect_domains=["mcp.example.com"],
        application_types=["native", "web"],
        max_ttl_seconds=7 * 86400,
    )


def _refused(response, code_fragment: str, error: str = "invalid_client_metadata"):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error, body
    assert code_fragment in body["error_description"], body
    return body


@pytest.mark.django_db
def test_anonymous_registration_is_off_without_a_profile(client, idp, catalogue, owner, team):
    before = counts()
    response = post(client, MCP_BODY)
    assert (
        response.status_code == 401 and "anonymous registration is not enabled" in response.json()["error_description"]
    )
    AnonymousProfile.objects.create(idp=idp, name="mcp", owner=owner, team=team, allowed_scopes=["tickets:read"])
    assert post(client, MCP_BODY).status_code == 401  # created, but off by default
    assert counts() == before


@pytest.mark.django_db
def test_an_mcp_client_registers_anonymously_and_belongs_to_the_profiles_team(client, profile, owner, team):
    response = post(client, MCP_BODY)
    assert response.status_code == 201, response.content
    info = response.json()
    assert info["token_endpoint_auth_method"] == "none" and info["internal_only"] is True
    created = Client.objects.get()
    assert created.created_via == CreatedVia.ANONYMOUS and created.get_created_via_display().startswith("Anonymous/MCP")
    assert created.owner == owner and created.team == team and created.state == ClientState.ACTIVE
    assert (created.expires_at - created.created_at).total_seconds() <= 7 * 86400 + 1
    reg = RegistrationRequest.objects.get()
    assert reg.profile == profile and reg.via == "anonymous" and reg.software_identity and reg.coalesce_key
    event = AuditEvent.objects.get(action="registration.accepted")
    assert event.after["profile"] == "mcp"


@pytest.mark.django_db
def test_policy_decides_a_wider_scope_goes_to_review(client, profile):
    profile.allowed_scopes = ["tickets:read", "tickets:write"]
    profile.save()
    response = post(client, dict(MCP_BODY, scope="tickets:write"))
    assert response.status_code == 202 and response.json()["status"] == "pending"


@pytest.mark.parametrize(
    ("change", "error", "fragment"),
    [
        (
            {"token_endpoint_auth_method": "private_key_jwt", "jwks": PUBLIC_JWKS},
            "invalid_client_metadata",
            "admits public clients only",
        ),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata", "shared secret"),
        (
            {"grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"]},
            "invalid_client_metadata",
            "admits grant_types authorization_code (+ refresh_token)",
        ),
        ({"grant_types": ["client_credentials"], "response_types": []}, "invalid_client_metadata", "requires"),
        (
            {"redirect_uris": ["https://evil.example.net/cb"]},
            "invalid_redirect_uri",
            "admits redirect URIs on a loopback host or mcp.example.com only",
        ),
        ({"redirect_uris": ["http://mcp.example.com/cb"]}, "invalid_redirect_uri", "uses http"),
        ({"redirect_uris": ["https://mcp.example.com/cb"]}, 201, None),
        ({"redirect_uris": ["https://app.mcp.example.com/cb"]}, 201, None),
        ({"scope": "tickets:write"}, "invalid_client_metadata", "not allowed by the anonymous registration profile"),
        ({"scope": "repo:write"}, "invalid_client_metadata", "not allowed by the anonymous registration profile"),
        ({"internal_only": False}, 202, None),  # allowed by the profile; the policy sends it to review
    ],
)
@pytest.mark.django_db
def test_each_profile_rule_refuses_with_its_reason_and_writes_nothing(client, profile, change, error, fragment):
    before = counts()
    response = post(client, {**MCP_BODY, **change})
    if isinstance(error, int):  # allowed by the profile: created, or sent to review by the policy
        assert response.status_code == error, response.content
        return
    _refused(response, fragment, error)
    assert counts() == before  # no request row, no client, no audit event of its own
    # counted per source and minute, folded into one audit event per minute like a refused credential
    assert UnauthorizedTally.objects.filter(error=error, action="registration.anonymous_refused").exists()


@pytest.mark.django_db
def test_rule_codes_name_the_rule(client, profile):
    from approvals.policy import REASON_CODES
    from approvals.policy_anonymous import ANONYMOUS_CODES

    assert all(REASON_CODES[code] == "refusal" for code in ANONYMOUS_CODES)
    profile.application_types = ["web"]
    profile.save()
    _refused(post(client, MCP_BODY), "admits application_type web, got 'native'")


# --- coalescing ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_identical_registration_returns_the_same_client_with_a_fresh_token(client, profile):
    first = post(client, MCP_BODY).json()
    second = post(client, MCP_BODY)
    assert second.status_code == 201, second.content
    again = second.json()
    assert again["client_id"] == first["client_id"]
    assert again["registration_client_uri"] == first["registration_client_uri"]
    assert again["registration_access_token"] != first["registration_access_token"]
    assert Client.objects.count() == 1 and RegistrationRequest.objects.count() == 1
    reg = RegistrationRequest.objects.get()
    assert reg.coalesced_count == 1 and reg.last_coalesced_at is not None
    event = AuditEvent.objects.get(action="registration.coalesced")
    assert event.object_id == reg.public_id and event.after["coalesced_count"] == 1
    # the fresh token manages the registration
    uri = again["registration_client_uri"].split("testserver", 1)[-1]
    assert client.get(uri, HTTP_AUTHORIZATION=f"Bearer {again['registration_access_token']}").status_code == 200


@pytest.mark.django_db
def test_a_different_registration_is_not_coalesced(client, profile):
    post(client, MCP_BODY)
    assert post(client, dict(MCP_BODY, scope="docs:read")).status_code == 201
    assert post(client, dict(MCP_BODY, redirect_uris=["http://127.0.0.1:9/cb"])).status_code == 201
    assert post(client, dict(MCP_BODY, software_id="com.example.other")).status_code == 201
    assert Client.objects.count() == 4


@pytest.mark.django_db
def test_coalescing_is_per_profile_switch_and_window(client, profile):
    post(client, MCP_BODY)
    profile.coalesce = False
    profile.save()
    post(client, MCP_BODY)
    assert Client.objects.count() == 2
    profile.coalesce, profile.coalesce_window_seconds = True, 60
    profile.save()
    RegistrationRequest.objects.update(created_at="2020-01-01T00:00:00Z")
    post(client, MCP_BODY)
    assert Client.objects.count() == 3  # the live ones are outside the window


@pytest.mark.django_db
def test_an_ended_client_is_not_handed_out_again(client, profile):
    post(client, MCP_BODY)
    Client.objects.update(state=ClientState.RETIRED)
    post(client, MCP_BODY)
    assert Client.objects.count() == 2


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_identical_registrations_at_once_make_one_client(live_server, profile):
    def register(_: int):
        with requests.Session() as http:
            response = http.post(f"{live_server.url}/oauth2/register", json=MCP_BODY, timeout=30)
            return response.status_code, response.json().get("registration_client_uri")

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(register, range(6)))
    # 201, or 202 "provisioning" for one that coalesced while the first was still being created at the IdP
    assert {status for status, _ in results} <= {201, 202}, results
    assert len({uri for _, uri in results}) == 1
    assert Client.objects.count() == 1
    assert RegistrationRequest.objects.get().coalesced_count == 5
    assert AuditEvent.objects.filter(action="registration.coalesced").count() == 5


# --- limits ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_per_software_limit_leaves_other_software_behind_the_same_address(client, profile):
    profile.rate_per_software = "2/m"
    profile.save()
    assert post(client, MCP_BODY).status_code == 201
    assert post(client, MCP_BODY).status_code == 201
    before = counts()
    limited = post(client, MCP_BODY)
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert limited.json()["error"] == "too_many_requests" and "software" in limited.json()["error_description"]
    assert counts() == before
    # another software from the same address still gets in
    assert post(client, dict(MCP_BODY, client_name="Other MCP Client")).status_code == 201


@pytest.mark.django_db
def test_per_profile_limit_and_live_client_quota(client, profile):
    profile.rate_per_profile = "1/m"
    profile.save()
    assert post(client, MCP_BODY).status_code == 201
    assert post(client, dict(MCP_BODY, client_name="b")).status_code == 429
    profile.rate_per_profile, profile.max_live_clients = "", 1
    profile.save()
    before = counts()
    _refused(post(client, dict(MCP_BODY, client_name="c")), "the anonymous profile's max live clients")
    assert counts() == before


@pytest.mark.django_db
def test_the_dashboard_counts_coalesced_registrations_and_anonymous_clients(client, profile, security_user):
    from django.core.cache import cache

    post(client, MCP_BODY)
    post(client, MCP_BODY)
    post(client, MCP_BODY)
    cache.clear()
    client.force_login(security_user)
    page = client.get("/dashboards/").content.decode()
    assert 'data-stat="coalesced"' in page
    stat = page.split('data-stat="coalesced"', 1)[1].split("</div>", 1)[0]
    assert '<span class="stat-value">2</span>' in stat
    path = page.split('data-path="anonymous"', 1)[1].split("</div>", 1)[0]
    assert "Anonymous/MCP" in path and '<span class="stat-value">1</span>' in path


# --- DCR debt ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dcr_debt_groups_duplicates_and_keeps_one_through_the_lifecycle(client, profile, security_user, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    profile.coalesce = False  # so the repeated registrations stay duplicates
    profile.save()
    for _ in range(3):
        assert post(client, MCP_BODY).status_code == 201
    assert post(client, dict(MCP_BODY, client_name="Other")).status_code == 201
    client.force_login(security_user)

    with CaptureQueriesContext(connection) as small:
        page = client.get("/dashboards/dcr-debt/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Keep one, retire 2" in html and 'data-stat="duplicates"' in html
    group = RegistrationRequest.objects.filter(client_name="Example MCP Client").first().software_identity
    for _ in range(3):
        post(client, dict(MCP_BODY, client_name="Third"))
    client.force_login(security_user)
    with CaptureQueriesContext(connection) as large:
        client.get("/dashboards/dcr-debt/")
    assert len(large) == len(small)  # one grouped query whatever the number of clients

    newest = Client.objects.filter(name="Example MCP Client").order_by("-created_at", "-pk").first()
    response = client.post(f"/dashboards/dcr-debt/{group}/retire-duplicates")
    assert response.status_code == 302
    live = Client.objects.filter(name="Example MCP Client", state=ClientState.ACTIVE)
    assert list(live) == [newest]
    assert Client.objects.filter(name="Example MCP Client", state=ClientState.RETIRED).count() == 2
    assert AuditEvent.objects.filter(action="client.retired", reason__startswith="DCR debt").count() == 2
    # nothing left to retire: refused, nothing changes
    before = counts()
    client.post(f"/dashboards/dcr-debt/{group}/retire-duplicates")
    assert counts() == before


@pytest.mark.django_db
def test_dcr_debt_is_for_security_and_admins(client, profile, owner):
    client.force_login(owner)
    assert client.get("/dashboards/dcr-debt/").status_code == 403
    assert client.post("/dashboards/dcr-debt/x/retire-duplicates").status_code == 403


def _near_setup(client, profile):
    profile.coalesce = False
    profile.save()
    for port in (33418, 40001, 51515):  # a native app picks a loopback port per run: three exact identities
        body = dict(MCP_BODY, redirect_uris=[f"http://127.0.0.1:{port}/callback"])
        assert post(client, body).status_code == 201
    for _ in range(2):
        assert post(client, dict(MCP_BODY, client_name="Other")).status_code == 201
    # same name, another path: not a near-duplicate of the three
    assert post(client, dict(MCP_BODY, redirect_uris=["http://127.0.0.1:33418/elsewhere"])).status_code == 201


@pytest.mark.django_db
def test_dcr_debt_groups_near_duplicates_apart_from_exact_ones(client, profile, security_user):
    from approvals.dcr_debt import dcr_debt, near_key

    _near_setup(client, profile)
    debt = dcr_debt()
    exact = {g.name: g.live for g in debt.groups if g.live > 1}
    assert exact == {"Other": 2}  # the three loopback ports are three exact identities of one live client each
    assert [(g.name, g.identities, g.live) for g in debt.near] == [("Example MCP Client", 3, 3)]
    assert debt.near[0].key == near_key(
        {"redirect_uris": ["http://127.0.0.1:9/callback"], "token_endpoint_auth_method": "none"}, "Example MCP Client"
    )
    assert near_key({"redirect_uris": ["https://app.example/cb"]}, "X") != near_key(
        {"redirect_uris": ["https://app.example:8443/cb"]}, "X"
    )  # only a loopback port is volatile

    client.force_login(security_user)
    html = client.get("/dashboards/dcr-debt/").content.decode()
    assert f'data-near="{debt.near[0].key}"' in html and "Near-duplicates" in html
    assert f"/inventory/new/?dcr={debt.near[0].key}" in html

    # "keep one, retire the rest" works on a near group through the lifecycle
    response = client.post(f"/dashboards/dcr-debt/{debt.near[0].key}/retire-duplicates")
    assert response.status_code == 302
    retired = Client.objects.filter(name="Example MCP Client", state=ClientState.RETIRED)
    assert retired.count() == 2
    assert AuditEvent.objects.filter(action="client.retired", reason__startswith="DCR debt").count() == 2
    assert dcr_debt().near == []


@pytest.mark.django_db
def test_move_to_preregistration_prefills_the_form_for_the_groups_owner(client, profile, security_user, owner):
    from approvals.dcr_debt import dcr_debt

    _near_setup(client, profile)
    key = dcr_debt().near[0].key
    client.force_login(security_user)
    page = client.get(f"/inventory/new/?dcr={key}")
    assert page.status_code == 200
    form = page.context["form"]
    metadata = json.loads(form.initial["metadata"])
    assert metadata["client_name"] == "Example MCP Client"
    assert metadata["redirect_uris"] == ["http://127.0.0.1/callback"]  # the volatile port left out
    assert form.initial["owner"] == owner.pk and form.initial["source"] == "metadata"
    assert "data-dcr-move" in page.content.decode()

    before = RegistrationRequest.objects.count()
    response = client.post(
        f"/inventory/new/?dcr={key}",
        {
            "source": "metadata",
            "metadata": form.initial["metadata"],
            "purpose": "One governed client for the MCP app",
            "scope": "tickets:read",
            "owner": owner.pk,
        },
    )
    assert response.status_code == 302 and response["Location"] == "/dashboards/dcr-debt/"
    assert RegistrationRequest.objects.count() == before + 1
    made = RegistrationRequest.objects.order_by("-pk").first()
    assert made.via == CreatedVia.PRE_REGISTRATION and made.owner == owner and made.submitted_by == security_user

    # an unknown group: 404, nothing written
    assert client.get("/inventory/new/?dcr=nope").status_code == 404


@pytest.mark.django_db
def test_move_to_preregistration_is_for_security_and_admins(client, profile, owner, admin_user, security_user):
    from approvals.dcr_debt import dcr_debt
    from approvals.preregistration import PreregistrationForbidden, preregister

    _near_setup(client, profile)
    key = dcr_debt().near[0].key
    client.force_login(admin_user)
    assert client.get(f"/inventory/new/?dcr={key}").status_code == 200
    client.force_login(owner)
    assert client.get(f"/inventory/new/?dcr={key}").status_code == 403
    before = counts()
    body = {"source": "metadata", "metadata": json.dumps(MCP_BODY), "purpose": "p", "owner": owner.pk}
    assert client.post(f"/inventory/new/?dcr={key}", body).status_code == 403
    with pytest.raises(PreregistrationForbidden):
        preregister(submitter=owner, owner=security_user, metadata=MCP_BODY, governance={"purpose": "p"}, dcr_move=True)
    assert counts() == before


@pytest.mark.django_db
def test_the_admin_form_keeps_profiles_to_low_scopes_and_every_change_is_audited(
    client, idp, owner, team, catalogue, admin_user
):
    from approvals.admin import AnonymousProfileAdminForm

    data = {
        "idp": idp.pk,
        "name": "mcp",
        "enabled": "on",
        "owner": owner.pk,
        "team": team.pk,
        "purpose": "Anonymous MCP client",
        "allowed_scopes": '["tickets:read", "repo:write"]',
        "allow_loopback": "on",
        "redirect_domains": '["https://mcp.example.com"]',
        "application_types": '["native", "desktop"]',
        "max_ttl_seconds": 86400,
        "internal_only": "on",
        "max_live_clients": 10,
        "coalesce": "on",
        "coalesce_window_seconds": 3600,
        "rate_per_software": "lots",
        "rate_per_profile": "600/m",
    }
    form = AnonymousProfileAdminForm(data)
    assert not form.is_valid()
    assert set(form.errors) == {"allowed_scopes", "redirect_domains", "application_types", "rate_per_software"}
    assert "low-sensitivity scopes only: repo:write" in form.errors["allowed_scopes"][0]

    client.force_login(admin_user)
    fixed = data | {
        "allowed_scopes": '["tickets:read"]',
        "redirect_domains": '["mcp.example.com"]',
        "application_types": '["native"]',
        "rate_per_software": "30/m",
    }
    response = client.post("/admin/approvals/anonymousprofile/add/", fixed, secure=True)
    assert response.status_code == 302, response.content[:2000]
    made = AnonymousProfile.objects.get()
    assert made.enabled and made.allowed_scopes == ["tickets:read"]
    assert AuditEvent.objects.filter(action="anonymous_profile.admin_create", object_id=str(made.pk)).count() == 1


@pytest.mark.django_db
def test_the_profile_is_the_one_of_the_idp_the_registration_targets(client, idp, profile, owner, team):
    """Two IdPs, two profiles: /oauth2/register is the default IdP's, /oauth2/idp/<name>/register names another."""
    from tests.factories import IdPFactory, UserFactory

    other_idp = IdPFactory(name="partners", config={"issuer": "https://partners.test", "token_endpoint": "x"})
    other_owner = UserFactory(username="partners-bot")
    AnonymousProfile.objects.create(
        idp=other_idp,
        name="partners-mcp",
        enabled=True,
        owner=other_owner,
        team=team,
        allowed_scopes=["docs:read"],
        max_ttl_seconds=86400,
        coalesce=False,
    )
    # The default IdP's profile allows tickets:read; the partners' does not (and vice versa for docs:read).
    assert post(client, MCP_BODY).status_code == 201
    default_client = Client.objects.get()
    assert default_client.idp == idp and default_client.owner == owner

    at_partners = client.post(
        "/oauth2/idp/partners/register", data=dict(MCP_BODY, scope="docs:read"), content_type="application/json"
    )
    assert at_partners.status_code == 201, at_partners.content
    partners_client = Client.objects.exclude(pk=default_client.pk).get()
    assert partners_client.idp == other_idp and partners_client.owner == other_owner
    assert (partners_client.expires_at - partners_client.created_at).total_seconds() <= 86400 + 1
    assert RegistrationRequest.objects.get(client=partners_client).profile.name == "partners-mcp"

    before = counts()
    refused = client.post("/oauth2/idp/partners/register", data=MCP_BODY, content_type="application/json")
    _refused(refused, "scope")  # tickets:read is the default IdP's profile's, not the partners'
    # An unknown or disabled IdP connection: a clear 404, nothing written.
    unknown = client.post("/oauth2/idp/nowhere/register", data=MCP_BODY, content_type="application/json")
    assert unknown.status_code == 404 and "nowhere" in unknown.json()["error_description"]
    # An IdP without an enabled profile: 401 as at the default endpoint without one.
    IdPFactory(name="bare")
    bare = client.post("/oauth2/idp/bare/register", data=MCP_BODY, content_type="application/json")
    assert bare.status_code == 401 and "not enabled" in bare.json()["error_description"]
    assert counts() == before


def _queries(client, body):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = post(client, body)
    assert response.status_code in (201, 202), response.content
    return [q["sql"] for q in captured.captured_queries], response


@pytest.mark.postgres_only  # SQLite takes the locked path every time (its writers are serial anyway)
@pytest.mark.django_db
def test_a_coalesced_registration_costs_no_more_statements_than_a_new_one(client, profile):
    """Issue 17: a coalesced registration should cost no more than a new one (bench/intake.py measures CPU)."""
    body = dict(MCP_BODY, scope="tickets:write")  # pending: the bench's shape
    profile.allowed_scopes = ["tickets:read", "tickets:write"]
    profile.coalesce = False
    profile.save()
    post(client, dict(body, client_name="warm-up"))
    new, _ = _queries(client, body)
    profile.coalesce = True
    profile.save()
    first = post(client, dict(body, client_name="coalesce-me")).json()
    coalesced, response = _queries(client, dict(body, client_name="coalesce-me"))
    assert response.json()["registration_client_uri"] == first["registration_client_uri"]
    assert len(coalesced) <= len(new), (coalesced, new)
    assert not any("pg_advisory_xact_lock" in sql for sql in coalesced)  # a hit needs no lock
    assert not any("anonymousprofile" in sql for sql in coalesced + new)  # the profile is kept per process
    reg = RegistrationRequest.objects.get(public_id=first["registration_client_uri"].rsplit("/", 1)[-1])
    assert reg.coalesced_count == 1
    assert AuditEvent.objects.get(action="registration.coalesced").after["coalesced_count"] == 1
    # The token handed out first is superseded; the fresh one manages the registration.
    uri = first["registration_client_uri"].split("testserver", 1)[-1]
    assert client.get(uri, HTTP_AUTHORIZATION=f"Bearer {first['registration_access_token']}").status_code == 401
    fresh = response.json()["registration_access_token"]
    assert client.get(uri, HTTP_AUTHORIZATION=f"Bearer {fresh}").json()["status"] == "pending"


def _race(monkeypatch, meanwhile):
    """The unlocked read, then ``meanwhile`` (what a concurrent request did), then our write; the calls made."""
    from approvals.oauth2 import anonymous

    real_unlocked, real_locked = anonymous.coalesce_find_with_live_count, anonymous.coalesce_find
    calls = []

    def unlocked_then_someone_else(**kwargs):
        found = real_unlocked(**kwargs)
        meanwhile()
        calls.append("unlocked")
        return found

    def locked(**kwargs):
        calls.append("locked")
        return real_locked(**kwargs)

    monkeypatch.setattr(anonymous, "coalesce_find_with_live_count", unlocked_then_someone_else)
    monkeypatch.setattr(anonymous, "coalesce_find", locked)
    return calls


@pytest.mark.postgres_only  # SQLite takes the locked path every time (its writers are serial anyway)
@pytest.mark.django_db
def test_a_reuse_that_races_a_concurrent_one_builds_on_it_without_the_lock(client, profile, monkeypatch):
    from django.db.models import F

    first = post(client, MCP_BODY).json()

    def someone_else_reuses():  # between our read and our write, another reuse issued a new token
        RegistrationRequest.objects.update(
            registration_access_token_hash="x" * 64,
            rat_previous_hash="p" * 64,
            rat_spent_hashes=["s" * 64],
            coalesced_count=F("coalesced_count") + 1,
        )

    calls = _race(monkeypatch, someone_else_reuses)
    again = post(client, MCP_BODY)
    assert again.status_code == 201 and again.json()["client_id"] == first["client_id"]
    assert calls == ["unlocked"]  # no fall back to the locked path
    reg = RegistrationRequest.objects.get()
    assert reg.coalesced_count == 2  # the concurrent one and ours
    assert AuditEvent.objects.get(action="registration.coalesced").after["coalesced_count"] == 2
    assert reg.registration_access_token_hash not in ("x" * 64, None) and reg.rat_previous_hash == ""
    assert reg.rat_spent_hashes == ["s" * 64, "p" * 64]  # built on the row as the concurrent reuse left it
    assert Client.objects.count() == 1


@pytest.mark.postgres_only
@pytest.mark.django_db
def test_a_reuse_whose_token_was_revoked_meanwhile_takes_the_locked_path(client, profile, monkeypatch):
    first = post(client, MCP_BODY).json()
    calls = _race(monkeypatch, lambda: RegistrationRequest.objects.update(registration_access_token_hash=None))
    again = post(client, MCP_BODY)
    assert again.status_code == 201 and again.json()["client_id"] == first["client_id"]
    assert calls == ["unlocked", "locked"]  # the unlocked write found no token, the read under the lock decided
    reg = RegistrationRequest.objects.get()
    assert reg.coalesced_count == 1 and reg.registration_access_token_hash is not None
    assert AuditEvent.objects.filter(action="registration.coalesced").count() == 1
    assert Client.objects.count() == 1


@pytest.mark.django_db
def test_the_cached_profile_is_dropped_when_an_admin_saves_it(client, profile):
    assert post(client, MCP_BODY).status_code == 201
    profile.allowed_scopes = ["docs:read"]
    profile.save()
    _refused(post(client, dict(MCP_BODY, client_name="after the change")), "scope")
    profile.enabled = False
    profile.save()
    assert post(client, dict(MCP_BODY, client_name="switched off")).status_code == 401
