"""End to end in a real browser: an owner attests one overdue client with its row's button, then two more at
once from the keyboard (Space on the checkboxes, Enter on "Attest selected"). Screenshots: artifacts/screenshots/.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory.choices import RiskTier
from inventory.models import Client
from portal.models import AuditEvent
from tests.e2e.support import SHOTS, assert_fits_a_laptop, login
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(transactional_db, role_groups, idp):
    alice = UserFactory(username="alice", roles=["owner"])
    overdue = ClientFactory(owner=alice, idp=idp, name="deploy-bot", risk_tier=RiskTier.HIGH)
    Client.objects.filter(pk=overdue.pk).update(created_at=timezone.now() - timedelta(days=45))
    others = [ClientFactory(owner=alice, idp=idp, name=f"helper-{i}") for i in range(2)]
    return {"alice": alice, "overdue": overdue, "others": others}


def test_owner_attests_one_then_two_from_the_keyboard(live_server, browser, world):
    base = live_server.url
    context, page = login(browser, base, "alice")
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{base}/inventory/mine/attest/")
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    first = rows.nth(0)
    assert first.get_attribute("data-client") == world["overdue"].registration_id  # most overdue first
    assert first.get_attribute("data-overdue") == "1" and "overdue" in first.inner_text()
    page.screenshot(path=str(SHOTS / "attest-due.png"), full_page=True)
    assert_fits_a_laptop(page)

    with page.expect_navigation():
        first.locator("button[data-attest-one]").click()
    page.wait_for_selector(".messages li.success:has-text('1 client(s) attested')")
    assert Client.objects.get(pk=world["overdue"].pk).attested_by_id == world["alice"].pk

    # Keyboard only: Space ticks each helper's checkbox, then Enter on the bulk button.
    for client in world["others"]:
        page.focus(f'input[name=ids][value="{client.registration_id}"]')
        page.keyboard.press("Space")
    assert page.inner_text("#attest-count") == "2"
    page.focus("#attest-selected")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector(".messages li.success:has-text('2 client(s) attested')")
    page.screenshot(path=str(SHOTS / "attest-done.png"), full_page=True)
    assert Client.objects.filter(attested_by=world["alice"]).count() == 3
    assert AuditEvent.objects.filter(action="client.attest").count() == 3
    assert not [e for e in errors if "Content Security Policy" in e]
    context.close()
