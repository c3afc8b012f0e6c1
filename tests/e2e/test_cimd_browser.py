"""In a real browser: an owner pre-registers a client by its Client ID Metadata Document URL at /inventory/new/,
an approver sees the document and approves it, and after the document widens the approver sees the change as a
diff against the pinned document. Debian's Chromium driven by Playwright (`make browser` installs it)."""

# ruff: noqa: F811 - the fixtures imported from tests.https_host are test parameters here

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.db import connections

from approvals.choices import RequestKind
from approvals.cimd.pinning import pin_check
from approvals.models import CimdPin, RegistrationRequest
from inventory.models import Client
from tests.e2e.support import SHOTS, login
from tests.factories import UserFactory
from tests.https_host import https_host, loopback_fetches  # noqa: F401

pytestmark = pytest.mark.e2e

PATH = "/oauth/browser-client.json"
CB = "https://app.example.test/callback"


@pytest.fixture
def world(transactional_db, role_groups, catalogue, idp):
    cache.clear()
    return {
        "owner": UserFactory(username="olivia", roles=["owner"]),
        "bob": UserFactory(username="bob", roles=["approver"]),
    }


def test_an_owner_pre_registers_by_url_and_an_approver_sees_the_document_and_the_diff(
    live_server, browser, world, loopback_fetches, https_host
):
    url = https_host.url(PATH, host="app.example.test")
    document = {
        "client_id": url,
        "client_name": "Browser Desk Agent",
        "redirect_uris": [CB],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    https_host.serve(PATH, json.dumps(document))
    try:
        _scenario(live_server.url, browser, url, document, https_host)
    finally:
        connections.close_all()
        cache.clear()


def _scenario(base: str, browser, url: str, document: dict, https_host):
    context, page = login(browser, base, "olivia")
    page.goto(f"{base}/inventory/new/")
    page.check("input[name=source][value=cimd]")
    page.fill("input[name=cimd_url]", url)
    page.fill("input[name=purpose]", "Answers service desk questions")
    with page.expect_navigation():
        page.click("form[action='/inventory/new/'] button[type=submit]")
    assert "waits for review" in page.inner_text(".messages"), page.content()[-3000:]
    page.screenshot(path=str(SHOTS / "preregister.png"), full_page=True)
    context.close()
    req = RegistrationRequest.objects.get(cimd_url=url)

    context, page = login(browser, base, "bob")
    page.goto(f"{base}/approvals/{req.public_id}/")
    content = page.content()
    assert req.cimd_sha256 in content and "Pre-registered by" in content and "Browser Desk Agent" in content
    page.fill("#approve-reason", "Vendor document reviewed")
    with page.expect_navigation():
        page.click("button[data-action=approve]")
    assert page.url == f"{base}/approvals/"
    client = Client.objects.get(registration_id=req.public_id)
    assert client.created_via == "cimd"

    https_host.serve(PATH, json.dumps(document | {"redirect_uris": [CB, "https://elsewhere.example.test/cb"]}))
    assert pin_check(pin_id=CimdPin.objects.get(client=client).pk).action == "change_requested"
    change = RegistrationRequest.objects.get(kind=RequestKind.CIMD_CHANGE)
    page.goto(f"{base}/approvals/{change.public_id}/")
    diff = page.inner_text("pre.diff")
    assert '+    "https://elsewhere.example.test/cb"' in diff
    page.screenshot(path=str(SHOTS / "cimd-change.png"), full_page=True)
    context.close()
