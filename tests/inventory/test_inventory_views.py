"""/inventory/: filters, keyset pagination, visibility, read-only, exports, explain page and evidence pack."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Decision
from inventory.choices import ClientState, CreatedVia, RiskTier
from inventory.models import Client
from inventory.pagination import keyset_paginate
from portal.audit import Actor, audit_record
from tests.factories import ClientFactory, IdPFactory, RequestFactory, TeamFactory, TokenFactory, UserFactory
from tests.inventory.security_data import bulk_clients

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_reports(settings):
    """Each test measures its own data: no cached dashboard/report snapshot from another test."""
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0


@pytest.fixture
def world(idp, owner, team):
    other_idp = IdPFactory(name="keycloak-eu")
    mallory = UserFactory(username="mallory", roles=["owner"], is_active=False)
    now = timezone.now()
    c = {
        "a": ClientFactory(
            name="alpha",
            idp=idp,
            owner=owner,
            team=team,
            risk_tier=RiskTier.LOW,
            scopes=["tickets:read"],
            expires_at=now + timedelta(hours=2),
            created_via=CreatedVia.TOKEN,
        ),
        "b": ClientFactory(
            name="bravo",
            idp=other_idp,
            owner=owner,
            risk_tier=RiskTier.HIGH,
            scopes=["repo:write", "tickets:read"],
            expires_at=now + timedelta(days=3),
            created_via=CreatedVia.SOFTWARE_STATEMENT,
            sync_failed=True,
        ),
        "c": ClientFactory(
            name="charlie",
            idp=idp,
            owner=mallory,
            risk_tier=RiskTier.MEDIUM,
            state=ClientState.EXPIRED,
            scopes=["crm:read"],
            expires_at=now - timedelta(days=1),
            orphaned_at=now,
            created_via=CreatedVia.ADMIN,
        ),
        "d": ClientFactory(
            name="delta",
            idp=idp,
            owner=mallory,
            risk_tier=RiskTier.LOW,
            managed=False,
            created_via=CreatedVia.DISCOVERED,
            stale_at=now,
            expires_at=None,
        ),
    }
    c["e"] = ClientFactory(
        name="echo",
        idp=idp,
        owner=owner,
        parent=c["a"],
        depth=1,
        created_via=CreatedVia.SPAWN,
        expires_at=now + timedelta(hours=1),
    )
    return c


def listed(client, params=None) -> list[str]:
    response = client.get("/inventory/", params or {})
    assert response.status_code == 200, response.content[:500]
    return sorted(c.name for c in response.context["page"].items)


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"state": "expired"}, ["charlie"]),
        ({"state": ["expired", "active"]}, ["alpha", "bravo", "charlie", "delta", "echo"]),
        ({"tier": "high"}, ["bravo"]),
        ({"idp": "keycloak-eu"}, ["bravo"]),
        ({"owner": "mallory"}, ["charlie", "delta"]),
        ({"team": "platform"}, ["alpha"]),
        ({"scope": "repo:write"}, ["bravo"]),
        ({"orphaned": "true"}, ["charlie"]),
        ({"orphaned": "false"}, ["alpha", "bravo", "delta", "echo"]),
        ({"stale": "true"}, ["delta"]),
        ({"unmanaged": "true"}, ["delta"]),
        ({"sync_failed": "true"}, ["bravo"]),
        ({"created_via": "spawn"}, ["echo"]),
        ({"created_via": ["token", "software_statement"]}, ["alpha", "bravo"]),
        ({"depth": "1"}, ["echo"]),
        ({"min_depth": "1"}, ["echo"]),
        ({"live": "true"}, ["alpha", "bravo", "delta", "echo"]),
        ({"failing": "owner_bound"}, ["delta"]),
        ({"q": "bravo", "tier": "high"}, ["bravo"]),
        ({"q": "bravo", "tier": "low"}, []),
    ],
)
def test_each_filter(client, security_user, world, params, expected):
    client.force_login(security_user)
    assert listed(client, params) == expected


def test_expiry_window_filters(client, security_user, world):
    client.force_login(security_user)
    now = timezone.now()
    before = (now + timedelta(days=1)).isoformat()
    assert listed(client, {"expires_before": before}) == ["alpha", "charlie", "echo"]
    assert listed(client, {"expires_after": now.isoformat()}) == ["alpha", "bravo", "echo"]
    assert listed(client, {"expires_after": now.isoformat(), "expires_before": before}) == ["alpha", "echo"]
    # a bare date means its midnight: two days ahead lies after alpha (+2 h) and before bravo (+3 days) at any
    # time of day (one day ahead failed when the test ran after 22:00, alpha expiring past midnight)
    assert listed(client, {"expires_before": (now + timedelta(days=2)).date().isoformat()}) == [
        "alpha",
        "charlie",
        "echo",
    ]


def test_bad_filter_value_is_a_clear_400(client, security_user, world):
    client.force_login(security_user)
    response = client.get("/inventory/", {"tier": "galactic", "idp": "nope"})
    assert response.status_code == 400
    assert b"galactic is not one of the available choices" in response.content
    assert response.context["page"] is None


def test_bad_cursor_is_a_400(client, security_user, world):
    client.force_login(security_user)
    response = client.get("/inventory/", {"after": "!!!not-a-cursor"})
    assert response.status_code == 400
    assert b"Invalid page cursor" in response.content


def test_owner_sees_only_their_own_clients(client, owner, world):
    client.force_login(owner)
    assert listed(client) == ["alpha", "bravo", "echo"]
    assert listed(client, {"owner": "mallory"}) == []
    assert client.get(f"/inventory/{world['c'].registration_id}/").status_code == 404
    assert client.get(f"/inventory/{world['c'].registration_id}/evidence.json").status_code == 404
    assert client.get(f"/inventory/{world['a'].registration_id}/").status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(client.get("/inventory/export.csv").streaming_content).decode())))
    assert sorted(r[2] for r in rows[1:]) == ["alpha", "bravo", "echo"]


def test_oversight_pages_refuse_owners_and_anonymous(client, owner, world):
    assert client.get("/inventory/").status_code == 302
    client.force_login(owner)
    for url in ("/dashboards/", "/reports/frameworks/", "/reports/frameworks.csv", "/dashboards/summary.csv"):
        assert client.get(url).status_code == 403, url
    nobody = UserFactory(username="no-roles")
    client.force_login(nobody)
    assert client.get("/inventory/").status_code == 403


def test_security_cannot_post_anything(client, security_user, world):
    client.force_login(security_user)
    reg = world["a"].registration_id
    for url in (
        "/inventory/",
        f"/inventory/{reg}/",
        f"/inventory/{reg}/evidence.json",
        "/inventory/export.csv",
        "/dashboards/",
        "/dashboards/summary.csv",
        "/reports/frameworks/",
        "/reports/frameworks.csv",
        "/api/v1/clients/",
        f"/api/v1/clients/{reg}/",
        "/api/v1/reports/sprawl",
        "/api/v1/reports/frameworks",
    ):
        for method in (client.post, client.put, client.delete):
            assert method(url).status_code == 403, (method, url)
    assert Client.objects.count() == 5
    assert Client.objects.get(pk=world["a"].pk).state == ClientState.ACTIVE


# --- keyset pagination -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sort", ["name", "-name", "created", "-created", "expires", "-expires", "state", "-tier", "depth"]
)
def test_keyset_walk_never_repeats_or_skips(idp, sort):
    owners = [UserFactory(username=f"kw{i}") for i in range(3)]
    bulk_clients(57, idp=idp, owners=owners, teams=[])
    qs = Client.objects.all()
    seen, cursor, pages = [], None, 0
    with CaptureQueriesContext(connection) as ctx:
        while True:
            page = keyset_paginate(qs, sort=sort, after=cursor, page_size=10)
            seen.extend(c.pk for c in page.items)
            pages += 1
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    assert pages == 6
    assert len(seen) == len(set(seen)) == 57
    assert not any("OFFSET" in q["sql"].upper() for q in ctx.captured_queries)
    # ... and walking back from the last page returns the same pages in reverse.
    back, before = [], page.prev_cursor
    while before:
        prev = keyset_paginate(qs, sort=sort, before=before, page_size=10)
        back = [c.pk for c in prev.items] + back
        before = prev.prev_cursor
    assert back + [c.pk for c in page.items] == seen


def test_list_page_links_keep_filters_and_use_cursors(client, security_user, idp):
    owners = [UserFactory(username="pager")]
    bulk_clients(200, idp=idp, owners=owners, teams=[])  # 80 active
    client.force_login(security_user)
    first = client.get("/inventory/", {"state": "active", "sort": "name"})
    page = first.context["page"]
    assert len(page.items) == 50
    next_url = first.context["next_url"]
    assert "state=active" in next_url and "sort=name" in next_url and "after=" in next_url
    second = client.get("/inventory/" + next_url)
    assert second.status_code == 200
    assert {c.pk for c in page.items}.isdisjoint({c.pk for c in second.context["page"].items})
    assert all(c.state == "active" for c in second.context["page"].items)


# --- exports -----------------------------------------------------------------------------------


def test_csv_export_matches_the_filter(client, security_user, world):
    client.force_login(security_user)
    response = client.get("/inventory/export.csv", {"tier": ["low", "high"], "live": "true", "sort": "name"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["registration_id", "idp_client_id", "name", "state"]
    assert [r[2] for r in body] == ["alpha", "bravo", "delta", "echo"]
    bravo = body[1]
    assert bravo[header.index("scopes")] == "repo:write tickets:read"
    assert bravo[header.index("idp")] == "keycloak-eu"


def test_json_export_matches_the_filter(client, security_user, world):
    client.force_login(security_user)
    response = client.get("/inventory/export.json", {"owner": "mallory"})
    data = json.loads(b"".join(response.streaming_content))
    assert data["filters"] == {"owner": ["mallory"]}
    assert sorted(c["name"] for c in data["clients"]) == ["charlie", "delta"]
    assert {c["owner"] for c in data["clients"]} == {"mallory"}
    assert "idp_state" not in data["clients"][0]


def test_csv_export_neutralises_formulas(client, security_user, idp):
    ClientFactory(name='=HYPERLINK("http://evil")', idp=idp)
    client.force_login(security_user)
    body = b"".join(client.get("/inventory/export.csv").streaming_content).decode()
    assert "'=HYPERLINK" in body


# --- explain page and evidence pack -------------------------------------------------------------


@pytest.fixture
def explained(world, approver, approver2, owner, catalogue):
    bravo = world["b"]
    token = TokenFactory(owner=owner, purpose="CI agents for the payments repo", plaintext="rat_explain_tok_01")
    request = RequestFactory(
        public_id=bravo.registration_id,
        owner=owner,
        token=token,
        state="approved",
        outcome="review",
        policy_version=3,
        risk_tier="high",
        approvals_needed=2,
        reasons=["scope repo:write is high sensitivity"],
        client=bravo,
    )
    Decision.objects.create(request=request, approver=approver, kind="approve", reason="needed for release")
    Decision.objects.create(request=request, approver=approver2, kind="approve", reason="ok with 24h")
    audit_record(
        actor=Actor.user(approver),
        action="request.approve",
        object_type="registration_request",
        object_id=bravo.registration_id,
        policy_version=3,
        reason="needed for release",
    )
    audit_record(
        actor=Actor.system("provisioner"),
        action="client.activate",
        object_type="client",
        object_id=bravo.registration_id,
    )
    child = ClientFactory(
        name="bravo-child", idp=bravo.idp, owner=owner, parent=bravo, depth=1, scopes=["tickets:read"]
    )
    ClientFactory(name="bravo-grandchild", idp=bravo.idp, owner=owner, parent=child, depth=2)
    return bravo


def test_explain_page_answers_the_four_questions(client, security_user, explained):
    client.force_login(security_user)
    response = client.get(f"/inventory/{explained.registration_id}/")
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "bob",
        "carol",
        "needed for release",
        "version 3",
        "scope repo:write is high sensitivity",
        "repo:write",
        "badge-high",
        "rat_explain_",
        "CI agents for the payments repo",
        "bravo-child",
        "bravo-grandchild",
        "request.approve",
        "client.activate",
        "keycloak-eu",
        "sync failed",
        "olivia",
    ):
        assert text in html, text
    assert response.context["retire_url"] is None  # security reads; retiring is the owner's (or admin's) call


def test_evidence_pack(client, security_user, explained):
    client.force_login(security_user)
    response = client.get(f"/inventory/{explained.registration_id}/evidence.json")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    pack = response.json()
    assert set(pack) == {
        "schema",
        "generated_at",
        "client",
        "purpose",
        "owner",
        "team",
        "sponsor",
        "approval",
        "policy_version",
        "scopes",
        "service_boundary",
        "lifetime",
        "revocation",
        "lineage",
        "flags",
        "timeline",
        "log",
    }
    assert pack["client"]["registration_id"] == explained.registration_id
    assert pack["sponsor"]["token"]["prefix"] == "rat_explain_"
    approval = pack["approval"][0]
    assert approval["policy_version"] == 3
    assert [d["approver"] for d in approval["decisions"]] == ["bob", "carol"]
    assert {s["name"]: s["sensitivity"] for s in pack["scopes"]} == {"repo:write": "high", "tickets:read": "low"}
    assert pack["lineage"]["descendants"][0]["name"] == "bravo-child"
    assert pack["lineage"]["descendants"][0]["children"][0]["name"] == "bravo-grandchild"
    assert [e["action"] for e in pack["timeline"]] == ["request.approve", "client.activate"]
    # the export is logged and sealed inline, and with it every event before it
    assert pack["log"]["export"]["event"]["action"] == "client.evidence_exported"
    assert [e["log_index"] for e in pack["log"]["entries"]] == [0, 1] and pack["log"]["export"]["log_index"] == 2
    assert pack["log"]["checkpoint"].split("\n")[1] == "3"
    assert pack["revocation"]["idp"] == "keycloak-eu" and pack["revocation"]["sync_failed"] is True
    assert "idp_state" not in json.dumps(pack)


def test_explain_shows_ancestors_and_shadow_clients(client, security_user, world):
    client.force_login(security_user)
    html = client.get(f"/inventory/{world['e'].registration_id}/").content.decode()
    assert "Ancestors:" in html and "alpha" in html
    shadow = client.get(f"/inventory/{world['d'].registration_id}/").content.decode()
    assert "shadow" in shadow and "nobody approved it here" in shadow


def test_unknown_client_is_404(client, security_user, db):
    client.force_login(security_user)
    assert client.get("/inventory/reg_doesnotexist/").status_code == 404


# --- constant query counts -------------------------------------------------------------------


def _count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
        if getattr(response, "streaming", False):
            b"".join(response.streaming_content)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


def test_constant_query_count_at_100_and_10000_clients(client, security_user, idp, catalogue):
    owners = [UserFactory(username=f"qc-owner-{i}") for i in range(20)]
    teams = [TeamFactory(name=f"QC team {i}", slug=f"qc-{i}") for i in range(5)]
    bulk_clients(100, idp=idp, owners=owners, teams=teams)
    client.force_login(security_user)
    urls = [
        "/inventory/",
        "/inventory/?q=agent-5&tier=high&state=active",
        "/inventory/?sort=expires&live=true",
        "/inventory/?team=qc-1&tier=high",
        "/inventory/team-options/?team=qc",
        "/dashboards/",
        "/reports/frameworks/",
        "/api/v1/clients/?tier=low",
        "/api/v1/reports/sprawl",
        "/api/v1/reports/frameworks",
    ]
    for url in urls:
        client.get(url)  # warm caches (roles, audit checkpoint)
    small = {url: _count_queries(client, url) for url in urls}
    bulk_clients(9_900, idp=idp, owners=owners, teams=teams, start=100)
    assert Client.objects.count() == 10_000
    large = {url: _count_queries(client, url) for url in urls}
    assert small == large
    assert max(large.values()) <= 25


def test_untouched_form_fields_mean_any(client, security_user, world):
    """The filter form submits every field; blank selects and 'unknown' booleans must not fail or filter."""
    client.force_login(security_user)
    params = {
        "q": "",
        "state": "",
        "tier": "",
        "idp": "",
        "team": "",
        "owner": "",
        "scope": "",
        "expires_before": "",
        "expires_after": "",
        "created_via": "",
        "depth": "",
        "orphaned": "unknown",
        "stale": "unknown",
        "unmanaged": "unknown",
        "sync_failed": "unknown",
        "failing": "",
        "sort": "",
    }
    assert listed(client, params) == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert listed(client, params | {"tier": "high"}) == ["bravo"]


def test_filter_form_shows_the_saved_view(client, security_user, world):
    client.force_login(security_user)
    html = client.get(
        "/inventory/",
        {
            "team": "platform",
            "idp": "keycloak-eu",
            "orphaned": "true",
            "failing": "owner_bound",
            "sort": "-expires",
            "q": "alp",
        },
    ).content.decode()
    assert 'name="team" id="id_team" value="platform"' in html
    assert '<span class="picked">· Platform</span>' in html
    assert '<option value="keycloak-eu" selected>keycloak-eu</option>' in html
    assert '<option value="true" selected>yes</option>' in html
    assert '<option value="owner_bound" selected>Owner bound</option>' in html
    assert '<option value="-expires" selected>' in html
    assert 'value="alp"' in html


@pytest.mark.django_db
def test_the_selected_team_is_shown_escaped_and_no_other_team_is_listed(client, security_user):
    """The team field is a picker (tests/inventory/test_team_picker.py): the page names the selected team only."""
    TeamFactory(name="<b>R&D</b>", slug="rnd")
    TeamFactory(name="Ops", slug="ops")
    client.force_login(security_user)
    html = client.get("/inventory/?team=rnd").content.decode()
    assert 'name="team" id="id_team" value="rnd"' in html
    assert '<span class="picked">· &lt;b&gt;R&amp;D&lt;/b&gt;</span>' in html
    assert '<option value="rnd">&lt;b&gt;R&amp;D&lt;/b&gt;</option>' in html  # the datalist starts with it
    assert "<b>R&D</b>" not in html
    assert 'value="ops"' not in html and ">Ops<" not in html


@pytest.mark.django_db
def test_a_row_shows_each_column_escaped(client, security_user, idp):
    """The rows are plain values prepared in the view (inventory.views.security._rows): every cell as the page
    showed it when the template read the model."""
    leaver = UserFactory(username="<i>leaver</i>", is_active=False)
    used = timezone.now() - timedelta(hours=3)
    row = ClientFactory(
        name="<script>x</script>",
        idp=idp,
        owner=leaver,
        team=TeamFactory(name="Data & ML"),
        purpose="p" * 100,
        managed=False,
        orphaned_at=timezone.now(),
        sync_failed=True,
        expires_at=None,
        last_used_at=used,
        last_used_source="keycloak",
        risk_tier=RiskTier.HIGH,
    )
    client.force_login(security_user)
    html = client.get("/inventory/").content.decode()
    assert f'href="/inventory/{row.registration_id}/">&lt;script&gt;x&lt;/script&gt;</a>' in html
    assert "<script>x</script>" not in html
    for badge in ("shadow", "orphaned", "sync failed"):
        assert f">{badge}</span>" in html
    assert '">stale</span>' not in html
    assert '<span class="badge-high">High</span>' in html
    assert '&lt;i&gt;leaver&lt;/i&gt; <span class="badge-high">inactive</span>' in html
    assert '<span class="muted small">Data &amp; ML</span>' in html
    assert f'<td class="small">{"p" * 79}…</td>' in html
    assert '<td class="small">never</td>' in html  # no expiry
    local = timezone.localtime(used)
    assert f'<time datetime="{local.isoformat()}" title="reported by keycloak">{local:%Y-%m-%d %H:%M}</time>' in html
