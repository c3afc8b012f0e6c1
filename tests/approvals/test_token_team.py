"""The token form carries a team (issue 19): it defaults to the owner's team, only the owner's teams are
offered, and every client registered with the token lands in it, so dashboards stop reading "(no team)"."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from approvals.models import InitialAccessToken
from inventory.selectors.owners import default_team_of
from portal.crypto import hash_token
from portal.models import AuditEvent
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

MINT = {
    "purpose": "Nightly ticket summaries",
    "scopes": ["tickets:read"],
    "max_ttl_hours": "12",
    "max_uses": "3",
    "valid_days": "2",
}


@pytest.fixture
def teams(owner, idp):
    support, platform = TeamFactory(name="Support", slug="support"), TeamFactory(name="Platform", slug="platform")
    support.members.add(owner)
    platform.members.add(owner)
    TeamFactory(name="Elsewhere", slug="elsewhere").members.add(UserFactory())
    # Most of the owner's live clients are Support's: that is their team, though Platform sorts first.
    for _ in range(2):
        ClientFactory(owner=owner, team=support, idp=idp)
    ClientFactory(owner=owner, team=platform, idp=idp)
    return {"support": support, "platform": platform}


def test_default_team_is_the_one_holding_most_of_the_owners_clients(owner, teams):
    assert default_team_of(owner) == teams["support"]
    assert default_team_of(UserFactory()) is None
    managed_only = UserFactory()
    teams["platform"].manager = managed_only
    teams["platform"].save()
    assert default_team_of(managed_only) == teams["platform"]


def test_form_offers_the_owners_teams_and_preselects_theirs(client, owner, catalogue, teams):
    client.force_login(owner)
    html = client.get("/tokens/").content.decode()
    assert '<select name="team"' in html
    assert f'<option value="{teams["support"].pk}" selected>Support</option>' in html
    assert f'<option value="{teams["platform"].pk}">Platform</option>' in html
    assert "Elsewhere" not in html


def test_minted_token_carries_the_team_into_its_clients(client, owner, catalogue, teams):
    client.force_login(owner)
    response = client.post("/tokens/", MINT | {"team": str(teams["platform"].pk)})
    assert response.status_code == 200
    token = InitialAccessToken.objects.get()
    assert token.team == teams["platform"]
    assert AuditEvent.objects.get(action="token.mint").after["team"] == "Platform"
    assert "Platform" in client.get("/tokens/").content.decode()
    # "No team" stays a deliberate choice.
    client.post("/tokens/", MINT | {"team": ""})
    assert InitialAccessToken.objects.order_by("-pk").first().team is None


def test_a_team_the_owner_is_not_in_is_refused_and_nothing_is_minted(client, owner, catalogue, teams):
    from inventory.models import Team

    client.force_login(owner)
    response = client.post("/tokens/", MINT | {"team": str(Team.objects.get(slug="elsewhere").pk)})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not InitialAccessToken.objects.exists()


def test_mint_access_token_defaults_to_the_owners_team_and_checks_a_given_one(owner, catalogue, teams):
    args = ["mint_access_token", "--owner", owner.username, "--purpose", "CI agents", "--scopes", "tickets:read"]
    out = StringIO()
    call_command(*args, "--ttl", "3600", stdout=out)
    assert InitialAccessToken.objects.get(token_hash=hash_token(out.getvalue().strip())).team == teams["support"]
    out = StringIO()
    call_command(*args, "--ttl", "3600", "--team", "platform", stdout=out)
    assert InitialAccessToken.objects.get(token_hash=hash_token(out.getvalue().strip())).team == teams["platform"]
    with pytest.raises(CommandError, match="not in a team with slug 'elsewhere'"):
        call_command(*args, "--ttl", "3600", "--team", "elsewhere", stdout=StringIO())
    assert InitialAccessToken.objects.count() == 2


def test_demo_token_is_the_support_teams():
    call_command("seed_demo", "--password", "demo-pass-123", stdout=StringIO())
    token = InitialAccessToken.objects.get(purpose="Demo: support triage agents")
    assert token.team is not None and token.team.name == "Support"
