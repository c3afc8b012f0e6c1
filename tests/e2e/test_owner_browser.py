"""End to end in a real browser: an owner renews one client, retires another through the confirm
dialog, and accepts a client a colleague offered. Screenshots go to artifacts/screenshots/.

Debian's Chromium driven by Playwright for Python (`make browser` installs it).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory.choices import ClientState
from inventory.models import Client, TransferOffer, TransferState
from portal.models import AuditEvent
from tests.e2e.support import SHOTS, assert_actions_in_view, assert_fits_a_laptop, login
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(transactional_db, role_groups, idp):
    olivia = UserFactory(username="olivia", roles=["owner"])
    dave = UserFactory(username="dave", roles=["owner"])
    now = timezone.now()
    renew_me = ClientFactory(
        owner=olivia, idp=idp, name="ticket-triage", expires_at=now + timedelta(hours=3), scopes=["tickets:read"]
    )
    retire_me = ClientFactory(
        owner=olivia, idp=idp, name="old-report-bot", expires_at=now + timedelta(hours=8), scopes=["docs:read"]
    )
    offered = ClientFactory(
        owner=dave, idp=idp, name="calendar-sync", expires_at=now + timedelta(hours=20), scopes=["calendar:read"]
    )
    offer = TransferOffer.objects.create(
        client=offered, from_user=dave, to_user=olivia, offered_by=dave, reason="dave is moving to the data team"
    )
    return {"olivia": olivia, "renew": renew_me, "retire": retire_me, "offered": offered, "offer": offer}


def test_owner_renews_retires_and_accepts_a_transfer(live_server, browser, world):
    base = live_server.url
    context, page = login(browser, base, "olivia")
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{base}/inventory/mine/")
    rows = page.locator("tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).get_attribute("data-client") == world["renew"].registration_id  # soonest expiry first
    page.screenshot(path=str(SHOTS / "owner-mine.png"), full_page=True)
    assert_fits_a_laptop(page)  # renew, suspend, rotate, transfer and retire in view at 1280 px
    assert_actions_in_view(page)  # at 1024 px the table scrolls, its buttons stay in sight

    # Renew one.
    before = world["renew"].expires_at
    with page.expect_navigation():
        page.locator(f'tr[data-client="{world["renew"].registration_id}"] button[data-action=renew]').click()
    page.wait_for_selector(".messages li.success:has-text('renewed until')")
    assert "renewed until" in page.inner_text(".messages")
    renewed = Client.objects.get(pk=world["renew"].pk)
    assert renewed.expires_at > before and renewed.renewals == 1
    page.screenshot(path=str(SHOTS / "owner-renewed.png"), full_page=True)

    # Retire one: the confirm dialog appears first; cancelling changes nothing, confirming retires.
    retire_button = page.locator(f'tr[data-client="{world["retire"].registration_id}"] button[data-action=retire]')
    retire_button.click()
    dialog = page.locator("dialog#confirm-dialog")
    dialog.wait_for(state="visible")
    assert "old-report-bot" in dialog.inner_text()
    page.screenshot(path=str(SHOTS / "owner-retire-confirm.png"), full_page=True)
    dialog.locator('button[value="cancel"]').click()
    assert Client.objects.get(pk=world["retire"].pk).state == ClientState.ACTIVE
    retire_button.click()
    dialog.wait_for(state="visible")
    # The renew message is still on the page until the retire POST's redirect lands: wait for the new one.
    with page.expect_navigation():
        dialog.locator("[data-confirm-ok]").click()
    page.wait_for_selector(".messages li.success:has-text('retired')")
    assert "old-report-bot retired" in page.inner_text(".messages")
    assert Client.objects.get(pk=world["retire"].pk).state == ClientState.RETIRED
    assert page.locator("tbody tr").count() == 1
    page.screenshot(path=str(SHOTS / "owner-retired.png"), full_page=True)

    # Accept a transfer from the inbox.
    page.goto(f"{base}/inventory/transfers/")
    offer_row = page.locator(f'tr[data-offer="{world["offer"].pk}"]')
    assert "calendar-sync" in offer_row.inner_text()
    page.screenshot(path=str(SHOTS / "owner-transfer-inbox.png"), full_page=True)
    with page.expect_navigation():
        offer_row.locator("button", has_text="Accept").click()
    page.wait_for_selector(".messages li.success:has-text('calendar-sync')")
    assert "You now own calendar-sync" in page.inner_text(".messages")
    assert Client.objects.get(pk=world["offered"].pk).owner_id == world["olivia"].pk
    assert TransferOffer.objects.get().state == TransferState.ACCEPTED
    page.goto(f"{base}/inventory/mine/")
    assert "calendar-sync" in page.inner_text("tbody")
    page.screenshot(path=str(SHOTS / "owner-after-transfer.png"), full_page=True)

    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["client.renew", "client.retire", "client.transfer_accept"]
    assert not [e for e in errors if "Content Security Policy" in e]
    context.close()
