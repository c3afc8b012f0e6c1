"""Owner pages for initial access tokens: mint (shown once), list, revoke, registrations per token."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import InitialAccessToken
from portal.crypto import hash_token
from portal.models import AuditEvent
from tests.approvals.intake_support import _fresh_limits_and_policy, low_body, make_token, post  # noqa: F401
from tests.factories import RequestFactory, TokenFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client, owner, catalogue, idp):
    client.force_login(owner)
    return client


MINT = {
    "purpose": "Nightly ticket summaries",
    "scopes": ["tickets:read", "docs:read"],
    "max_ttl_hours": "12",
    "max_uses": "3",
    "valid_days": "2",
    "internal_only": "on",
}


def test_mint_shows_the_token_once_and_stores_only_its_hash(owner_client, owner):
    response = owner_client.post("/tokens/", MINT)
    assert response.status_code == 200
    html = response.content.decode()
    plaintext = re.search(r'<code id="minted-token">(rat_[^<]+)</code>', html).group(1)
    assert f'data-copy="{plaintext}"' in html
    token = InitialAccessToken.objects.get()
    assert token.token_hash == hash_token(plaintext) and token.owner == owner
    assert token.allowed_scopes == ["docs:read", "tickets:read"] and token.max_uses == 3
    assert token.max_ttl_seconds == 12 * 3600 and token.internal_only is True
    assert timedelta(days=1, hours=23) < token.expires_at - timezone.now() <= timedelta(days=2)
    assert AuditEvent.objects.filter(action="token.mint", object_id=str(token.pk)).count() == 1
    # the list never shows it again, only the prefix
    listing = owner_client.get("/tokens/").content.decode()
    assert plaintext not in listing and f"{token.prefix}…" in listing
    # and it works at the registration endpoint
    assert post(owner_client, low_body(), plaintext).status_code == 201


def test_mint_with_bad_input_shows_errors_and_creates_nothing(owner_client):
    response = owner_client.post("/tokens/", MINT | {"purpose": "", "scopes": [], "max_uses": "0"})
    assert response.status_code == 400
    html = response.content.decode()
    assert html.count('class="errorlist"') >= 3 and "has-error" in html
    assert not InitialAccessToken.objects.exists()
    assert owner_client.post("/tokens/", MINT | {"scopes": ["not:a:scope"]}).status_code == 400
    assert not InitialAccessToken.objects.exists()


def test_list_shows_prefix_uses_expiry_and_state(owner_client, owner):
    now = timezone.now()
    TokenFactory(owner=owner, plaintext="rat_active_0000000000", uses=1, max_uses=5)
    TokenFactory(owner=owner, plaintext="rat_revoked_000000000", revoked_at=now)
    TokenFactory(owner=owner, plaintext="rat_expired_000000000", expires_at=now - timedelta(minutes=1))
    TokenFactory(owner=owner, plaintext="rat_usedup_0000000000", uses=2, max_uses=2)
    TokenFactory(owner=UserFactory(username="someone-else"), plaintext="rat_not_mine_00000000")
    html = owner_client.get("/tokens/").content.decode()
    assert "rat_active_0" in html and "1 / 5" in html
    for state in ("active", "revoked", "expired", "used up"):
        assert f">{state}</span>" in html
    assert "rat_not_mine" not in html
    assert "rat_active_0000000000" not in html  # prefix only


def test_empty_state(owner_client):
    assert "You have no registration tokens yet" in owner_client.get("/tokens/").content.decode()


def test_revoke_asks_for_confirmation_and_stops_registrations(owner_client, owner):
    token, plaintext = make_token(owner)
    html = owner_client.get("/tokens/").content.decode()
    assert "data-confirm=" in html and f"/tokens/{token.pk}/revoke" in html
    response = owner_client.post(f"/tokens/{token.pk}/revoke", follow=True)
    assert response.redirect_chain[-1][0] == "/tokens/"
    assert "revoked: it can no longer register clients" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert post(owner_client, low_body(), plaintext).status_code == 401
    # revoking twice explains itself and changes nothing
    response = owner_client.post(f"/tokens/{token.pk}/revoke", follow=True)
    assert "already revoked" in response.content.decode()
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_cannot_see_or_revoke_someone_elses_token(owner_client):
    theirs = TokenFactory(owner=UserFactory(username="theirs"), plaintext="rat_theirs_0000000000")
    assert owner_client.get(f"/tokens/{theirs.pk}/").status_code == 404
    assert owner_client.post(f"/tokens/{theirs.pk}/revoke").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_revoke_needs_post(owner_client, owner):
    token, _ = make_token(owner)
    assert owner_client.get(f"/tokens/{token.pk}/revoke").status_code == 405


def test_non_owners_are_turned_away(client, approver):
    assert client.get("/tokens/").status_code == 302  # anonymous → login
    client.force_login(approver)
    assert client.get("/tokens/").status_code == 403


def test_detail_lists_the_registrations_a_token_produced(owner_client, owner):
    token, plaintext = make_token(owner)
    assert post(owner_client, low_body(client_name="good-agent"), plaintext).status_code == 201
    assert post(owner_client, low_body(client_name="bad-agent", scope="nope:x"), plaintext).status_code == 400
    html = owner_client.get(f"/tokens/{token.pk}/").content.decode()
    assert "good-agent" in html and "bad-agent" in html
    assert "Refused by policy" in html and "not in the scope catalogue" in html
    assert "Registrations made with this token" in html


def test_detail_empty_state(owner_client, owner):
    token, _ = make_token(owner)
    assert "No agent has registered with this token yet" in owner_client.get(f"/tokens/{token.pk}/").content.decode()


@pytest.mark.parametrize("n", [3, 30])
def test_list_query_count_does_not_grow_with_tokens(owner_client, owner, n, django_assert_num_queries):
    for i in range(n):
        token = TokenFactory(owner=owner, plaintext=f"rat_many_{i:012d}")
        RequestFactory(token=token, owner=owner)
    # session, user, groups (roles), count, page of tokens (with registration counts, teams), the mint form's
    # scope catalogue, IdP choices, the owner's teams and which one is theirs
    with django_assert_num_queries(9):
        response = owner_client.get("/tokens/")
    assert response.status_code == 200


@pytest.mark.parametrize("n", [3, 30])
def test_detail_query_count_does_not_grow_with_registrations(owner_client, owner, n, django_assert_num_queries):
    token, _ = make_token(owner)
    for _ in range(n):
        RequestFactory(token=token, owner=owner)
    # session, user, groups, token, count, page of registrations (with clients)
    with django_assert_num_queries(6):
        response = owner_client.get(f"/tokens/{token.pk}/")
    assert response.status_code == 200


def test_mint_with_networks_one_per_line_conditions_the_token(owner_client, owner):
    networks = " 10.0.0.0/8 \r\n\r\n2001:db8::/32\r\n"
    response = owner_client.post("/tokens/", MINT | {"allowed_networks": networks})
    assert response.status_code == 200, response.content
    html = response.content.decode()
    assert "10.0.0.0/8, 2001:db8::/32" in html
    plaintext = re.search(r'<code id="minted-token">(rat_[^<]+)</code>', html).group(1)
    token = InitialAccessToken.objects.get()
    assert token.allowed_networks == ["10.0.0.0/8", "2001:db8::/32"]
    assert AuditEvent.objects.get(action="token.mint").after["allowed_networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert "10.0.0.0/8, 2001:db8::/32" in owner_client.get(f"/tokens/{token.pk}/").content.decode()
    outside = post(owner_client, low_body(), plaintext, REMOTE_ADDR="203.0.113.9")
    assert outside.status_code == 403 and "condition allowed_networks" in outside.json()["error_description"]
    assert post(owner_client, low_body(), plaintext, REMOTE_ADDR="10.9.8.7").status_code == 201


@pytest.mark.parametrize(
    "networks,message",
    [
        ("10.0.0.0/8\n10.1.2.3/8", "allowed network #2 &#x27;10.1.2.3/8&#x27; is not a CIDR block"),
        ("office", "allowed network #1 &#x27;office&#x27; is not a CIDR block"),
        ("\n".join(["10.0.0.0/8"] * 101), "at most 100 allowed networks"),
    ],
)
def test_mint_with_a_bad_network_names_it_and_creates_nothing(owner_client, networks, message):
    response = owner_client.post("/tokens/", MINT | {"allowed_networks": networks})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and "one CIDR block per line" in html
    assert not InitialAccessToken.objects.exists() and not AuditEvent.objects.exists()


def test_mint_without_networks_is_unconditioned(owner_client):
    assert owner_client.post("/tokens/", MINT).status_code == 200
    assert InitialAccessToken.objects.get().allowed_networks == []
