"""The inventory's team picker: the list page names the selected team only (never an <option> per team), the
suggestions come from /inventory/team-options/ (inventory.views.teams.team_picker_options), and ``?team=<slug>``
filters as it always did."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import Team
from inventory.selectors.teams import SUGGESTION_LIMIT, team_suggestions
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

OPTIONS_URL = "/inventory/team-options/"
OPTION = re.compile(r'<option value="([^"]*)">([^<]*)</option>')


def many_teams(n: int, *, start: int = 0) -> None:
    Team.objects.bulk_create([Team(name=f"Bulk team {i:04d}", slug=f"bulk-{i:04d}") for i in range(start, start + n)])


def suggested(client, text: str) -> list[tuple[str, str]]:
    response = client.get(OPTIONS_URL, {"team": text})
    assert response.status_code == 200, response.content[:300]
    return OPTION.findall(response.content.decode())


@pytest.fixture
def teams(db):
    return {
        "payments": TeamFactory(name="Payments", slug="payments"),
        "platform": TeamFactory(name="Platform", slug="platform"),
        "data": TeamFactory(name="Data & ML", slug="data-ml"),
        "ops": TeamFactory(name="Site reliability", slug="sre-ops"),
    }


# --- the list page ---------------------------------------------------------------------------------------


def _list_page(client, url: str) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode(), len(ctx.captured_queries)


def test_the_list_page_lists_no_team_and_its_queries_do_not_grow_with_the_teams(client, security_user, teams):
    client.force_login(security_user)
    client.get("/inventory/")  # warm caches (roles, audit checkpoint)
    _, with_four_teams = _list_page(client, "/inventory/")
    many_teams(2_000)
    html, unfiltered = _list_page(client, "/inventory/")
    assert "Bulk team" not in html and "bulk-0" not in html and "Payments" not in html
    assert '<datalist id="id_team_options"></datalist>' in html
    assert 'name="team" id="id_team" value=""' in html
    assert unfiltered == with_four_teams
    html, filtered = _list_page(client, "/inventory/?team=bulk-1234")
    assert re.findall(r"Bulk team \d+", html) == ["Bulk team 1234", "Bulk team 1234"]  # the label and the datalist
    assert '<datalist id="id_team_options"><option value="bulk-1234">Bulk team 1234</option></datalist>' in html
    assert filtered == unfiltered + 1  # validating the slug: one indexed get, never a list of teams


def test_filtering_by_team_slug_still_filters(client, security_user, idp, owner, teams):
    ClientFactory(name="pay-bot", idp=idp, owner=owner, team=teams["payments"])
    ClientFactory(name="plat-bot", idp=idp, owner=owner, team=teams["platform"])
    ClientFactory(name="no-team-bot", idp=idp, owner=owner)
    client.force_login(security_user)
    response = client.get("/inventory/", {"team": "payments"})
    assert response.status_code == 200
    assert [c.name for c in response.context["page"].items] == ["pay-bot"]
    assert response.context["selected_team"] == teams["payments"]
    # the framework report's drill-down links combine it with a failing control
    response = client.get("/inventory/?failing=purpose_recorded&team=platform")
    assert response.status_code == 200
    assert response.context["selected_team"] == teams["platform"]
    # the API shares the FilterSet
    response = client.get("/api/v1/clients/", {"team": "platform"})
    assert response.status_code == 200
    assert [c["name"] for c in response.json()["results"]] == ["plat-bot"]


def test_an_unknown_slug_is_a_clear_error_and_lists_nothing(client, security_user, idp, owner, teams):
    ClientFactory(name="pay-bot", idp=idp, owner=owner, team=teams["payments"])
    client.force_login(security_user)
    response = client.get("/inventory/", {"team": "Payments", "tier": "high"})  # a name is not a slug
    assert response.status_code == 400
    html = response.content.decode()
    assert "No team has the slug “Payments”." in html
    assert response.context["page"] is None and "pay-bot" not in html
    assert 'class="field has-error"><label for="id_team">Team</label>' in html
    assert 'name="team" id="id_team" value="Payments"' in html  # kept for correcting
    api = client.get("/api/v1/clients/", {"team": "nope"})
    assert api.status_code == 400
    assert "No team has the slug “nope”." in api.content.decode()


def test_the_team_field_fetches_suggestions_from_the_options_endpoint(client, security_user, teams):
    client.force_login(security_user)
    html = client.get("/inventory/").content.decode()
    field = html.split('<input type="text" name="team"', 1)[1].split(">", 1)[0]
    assert 'list="id_team_options"' in field
    assert f'hx-get="{OPTIONS_URL}"' in field and 'hx-target="#id_team_options"' in field


# --- the suggestions -------------------------------------------------------------------------------------


def test_suggestions_match_name_or_slug_case_insensitively_ordered_by_name(client, security_user, teams):
    client.force_login(security_user)
    assert suggested(client, "PA") == [("payments", "Payments")]
    assert suggested(client, "pl") == [("platform", "Platform")]
    assert suggested(client, "OPS") == [("sre-ops", "Site reliability")]  # the slug only
    assert suggested(client, "reliab") == [("sre-ops", "Site reliability")]  # inside the name
    assert suggested(client, "a") == [  # by name
        ("data-ml", "Data &amp; ML"),
        ("payments", "Payments"),
        ("platform", "Platform"),
        ("sre-ops", "Site reliability"),
    ]
    assert suggested(client, "  plat  ") == [("platform", "Platform")]
    assert suggested(client, "nothing-like-it") == []
    assert suggested(client, "%") == [] and suggested(client, "_") == []  # not LIKE wildcards
    assert suggested(client, "x" * 500) == []


def test_suggestions_are_escaped(client, security_user):
    TeamFactory(name='<b>R&D</b> "x"', slug="rnd")
    client.force_login(security_user)
    body = client.get(OPTIONS_URL, {"team": "r"}).content.decode()
    assert '<option value="rnd">&lt;b&gt;R&amp;D&lt;/b&gt; &quot;x&quot;</option>' in body
    assert "<b>" not in body


def test_suggestions_are_limited_and_cost_one_query(client, security_user):
    many_teams(2_000)
    client.force_login(security_user)
    for text, expected in (
        ("", list(range(SUGGESTION_LIMIT))),
        ("01", [i for i in range(2_000) if "01" in f"{i:04d}"][:SUGGESTION_LIMIT]),  # 0001, 0010…0019, 0100…
    ):
        with CaptureQueriesContext(connection) as ctx:
            assert suggested(client, text) == [(f"bulk-{i:04d}", f"Bulk team {i:04d}") for i in expected]
        assert len([q for q in ctx.captured_queries if "inventory_team" in q["sql"]]) == 1
    assert SUGGESTION_LIMIT == 20
    assert team_suggestions(text="01", limit=3) == [
        ("bulk-0001", "Bulk team 0001"),
        ("bulk-0010", "Bulk team 0010"),
        ("bulk-0011", "Bulk team 0011"),
    ]


def test_suggestions_ask_the_same_permission_as_the_inventory(client, teams, owner, approver, security_user):
    anonymous = client.get(OPTIONS_URL, {"team": "pa"})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert "payments" not in anonymous.content.decode()
    client.force_login(UserFactory(username="no-roles"))
    assert client.get("/inventory/").status_code == 403
    assert client.get(OPTIONS_URL, {"team": "pa"}).status_code == 403
    for user in (owner, approver, security_user):  # whoever may open the inventory, which filters by any team
        client.force_login(user)
        assert client.get("/inventory/").status_code == 200, user.username
        assert suggested(client, "pa") == [("payments", "Payments")], user.username
    assert client.post(OPTIONS_URL, {"team": "pa"}).status_code == 403  # read-only, as every security page
