"""End to end in a real browser: an agent registers a high-risk client over HTTP, two approvers clear it
through the queue (detail form, then keyboard + htmx inline form), the agent's poll gets its client,
and a second request is denied. Screenshots of the queue and detail pages go to artifacts/screenshots/.

Debian's Chromium driven by Playwright for Python (`make browser` installs it).
"""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from django.db import connections
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from inventory.choices import ClientState, RiskTier
from inventory.models import Client
from tests.e2e.support import SHOTS, assert_actions_in_view, assert_fits_a_laptop, login
from tests.factories import TokenFactory, UserFactory

pytestmark = pytest.mark.e2e

TOKEN = "rat_e2e_queue_token_0000000000"
JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            "kid": "e2e",
        }
    ]
}


@pytest.fixture
def world(transactional_db, role_groups, catalogue, idp, team):
    owner = UserFactory(username="olivia", roles=["owner"])
    bob = UserFactory(username="bob", roles=["approver"])
    carol = UserFactory(username="carol", roles=["approver"])
    TokenFactory(
        owner=owner,
        team=team,
        plaintext=TOKEN,
        purpose="deploy agent for the platform team",
        allowed_scopes=["tickets:read", "repo:write", "crm:read"],
        max_uses=10,
        max_ttl_seconds=86400,
        expires_at=timezone.now() + timedelta(days=1),
    )
    return {"owner": owner, "bob": bob, "carol": carol}


def register(base: str, body: dict) -> dict:
    response = httpx.post(f"{base}/oauth2/register", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202, response.text
    return response.json()


def poll(info: dict) -> httpx.Response:
    response = httpx.get(
        info["registration_client_uri"], headers={"Authorization": f"Bearer {info['registration_access_token']}"}
    )
    if "registration_access_token" in response.json():  # RFC 7592 reads rotate the token
        info["registration_access_token"] = response.json()["registration_access_token"]
    return response


def test_two_approvers_clear_a_high_risk_request_and_one_is_denied(live_server, browser, world):
    try:
        _scenario(live_server.url, browser)
    finally:
        # ORM calls made while Playwright's greenlet loop runs use a connection bound to this context;
        # close it here or it outlives the test and blocks dropping the test database.
        connections.close_all()


def _scenario(base: str, browser):
    high = register(
        base,
        {
            "client_name": "deploy-bot",
            "purpose": "Open pull requests for dependency bumps",
            "scope": "repo:write tickets:read",
            "jwks": JWKS,
            "requested_ttl": 3600,
            "redirect_uris": ["https://deploy-bot.example/cb"],
        },
    )
    assert high["status"] == "pending"
    medium = register(
        base,
        {
            "client_name": "crm-reader",
            "purpose": "Read CRM accounts for reports",
            "scope": "crm:read",
            "jwks": JWKS,
            "requested_ttl": 3600,
        },
    )
    high_req = RegistrationRequest.objects.get(public_id=high["registration_client_uri"].rsplit("/", 1)[-1])
    assert high_req.risk_tier == RiskTier.HIGH and high_req.approvals_needed == 2
    assert poll(high).status_code == 202

    # bob: queue -> detail -> approve with a reason (plain form post)
    context, page = login(browser, base, "bob")
    page.goto(f"{base}/approvals/")
    assert "2" in page.locator(".count-badge").first.inner_text().split()
    rows = page.locator("tr[data-row]")
    assert rows.count() == 2
    assert "deploy-bot" in rows.nth(0).inner_text()  # high tier first
    assert "0 of 2" in rows.nth(0).inner_text()
    page.screenshot(path=str(SHOTS / "approvals-queue.png"), full_page=True)
    assert_fits_a_laptop(page)  # the decision buttons are in view at 1280 px
    assert_actions_in_view(page)  # at 1024 px the table scrolls, its buttons stay in sight
    page.click("text=deploy-bot")
    page.wait_for_url(re.compile(r".*/approvals/reg_.+/$"))
    assert "Open pull requests" in page.content()
    assert "test token" not in page.content() and "deploy agent for the platform team" in page.content()
    page.screenshot(path=str(SHOTS / "approvals-detail.png"), full_page=True)
    page.fill("#approve-reason", "Dependency bumps need repo write; reviewed the scope")
    page.click("button[data-action=approve]")
    page.wait_for_url(f"{base}/approvals/")
    assert "needs another approver" in page.inner_text(".messages")
    assert "deploy-bot" not in page.inner_text("#queue-results")  # bob already decided it
    context.close()

    # carol: keyboard j + a opens the inline form (htmx), Enter submits, the queue updates in place
    context, page = login(browser, base, "carol")
    page.goto(f"{base}/approvals/")
    assert "1 of 2" in page.locator("tr[data-row]").nth(0).inner_text()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("j")
    page.keyboard.press("a")
    reason = page.locator(f"#reason-{high_req.public_id}")
    reason.wait_for(state="visible")
    reason.fill("Second pair of eyes: agreed")
    reason.press("Enter")
    page.locator("#queue-results .messages").wait_for()
    assert "the client is being provisioned" in page.inner_text("#queue-results .messages")
    assert page.url == f"{base}/approvals/"  # swapped in place, no navigation
    page.screenshot(path=str(SHOTS / "approvals-queue-after-carol.png"), full_page=True)
    context.close()

    high_req.refresh_from_db()
    assert high_req.state == RequestState.APPROVED
    client = Client.objects.get(pk=high_req.client_id)
    assert client.state == ClientState.PROVISIONING and client.registration_id == high_req.public_id
    assert poll(high).status_code == 202  # waiting for the IdP

    # what a worker does next: deliver the outbox CREATE (to the dry-run IdP), then the poll answers 200
    from inventory.outbox.deliver import deliver_client_outbox

    assert deliver_client_outbox(client.pk)
    answer = poll(high)
    assert answer.status_code == 200, answer.text
    assert answer.json()["client_id"]

    # bob denies the other request from the queue's inline form
    context, page = login(browser, base, "bob")
    page.goto(f"{base}/approvals/")
    row = page.locator("tr[data-row]", has_text="crm-reader")
    row.locator("[data-action=deny]").click()
    medium_id = medium["registration_client_uri"].rsplit("/", 1)[-1]
    page.fill(f"#reason-{medium_id}", "CRM access is not needed for this purpose")
    page.click(f"#slot-{medium_id} button[type=submit]")
    page.locator("#confirm-dialog [data-confirm-ok]").click()
    page.locator("#queue-results .messages").wait_for()
    assert "Denied crm-reader" in page.inner_text("#queue-results .messages")
    assert "queue is empty" in page.inner_text("#queue-results")
    assert "0" in page.inner_text("#nav-pending-count").split()  # badge refreshed out of band
    page.screenshot(path=str(SHOTS / "approvals-queue-after-deny.png"), full_page=True)
    context.close()
    assert RegistrationRequest.objects.get(public_id=medium_id).state == RequestState.DENIED
    denied = poll(medium)
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"
