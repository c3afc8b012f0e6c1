"""End to end in a real browser: the CISO signs in, finds a client by a misspelt search, reads its
explain page, then the sprawl dashboard and the framework report. Screenshots go to artifacts/screenshots/.

Debian's Chromium driven by Playwright for Python (`make browser` installs it).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Decision
from inventory.choices import RiskTier
from portal.audit import Actor, audit_record
from tests.e2e.support import SHOTS, assert_fits_a_laptop, login
from tests.factories import ClientFactory, RequestFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _fresh_reports(settings):
    """Each test measures its own data: no cached dashboard/report snapshot from another test."""
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0


@pytest.fixture
def estate(transactional_db, role_groups, catalogue, idp, team):
    UserFactory(username="ciso", roles=["security"])
    olivia = UserFactory(username="olivia", first_name="Olivia", roles=["owner"])
    bob = UserFactory(username="bob", roles=["approver"])
    carol = UserFactory(username="carol", roles=["approver"])
    leaver = UserFactory(username="leaver", is_active=False)
    now = timezone.now()
    target = ClientFactory(
        name="invoice-summarizer",
        purpose="Summarises supplier invoices for finance",
        idp=idp,
        owner=olivia,
        team=team,
        risk_tier=RiskTier.HIGH,
        scopes=["db:prod:read"],
        expires_at=now + timedelta(hours=20),
        policy_version=1,
    )
    request = RequestFactory(
        public_id=target.registration_id,
        owner=olivia,
        state="approved",
        outcome="review",
        risk_tier="high",
        approvals_needed=2,
        client=target,
        reasons=["scope db:prod:read is high sensitivity"],
    )
    Decision.objects.create(request=request, approver=bob, kind="approve", reason="finance sign-off")
    Decision.objects.create(request=request, approver=carol, kind="approve", reason="24h is fine")
    audit_record(
        actor=Actor.user(olivia), action="client.create", object_type="client", object_id=target.registration_id
    )
    audit_record(
        actor=Actor.system("provisioner"),
        action="client.activate",
        object_type="client",
        object_id=target.registration_id,
    )
    ClientFactory(name="ticket-triage-bot", purpose="Labels support tickets", idp=idp, owner=olivia)
    ClientFactory(name="calendar-helper", purpose="Books rooms", idp=idp, owner=leaver)
    return target


def test_ciso_finds_a_client_by_typo_and_reads_the_reports(live_server, browser, estate):
    base = live_server.url
    context, page = login(browser, base, "ciso")

    page.goto(f"{base}/inventory/")
    assert_fits_a_laptop(page)
    page.fill("input[name=q]", "invoce sumarizer")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**/inventory/?q=invoce+sumarizer*")
    rows = page.locator("tbody tr[data-row]")
    assert rows.count() == 1
    assert "invoice-summarizer" in rows.first.inner_text()
    page.screenshot(path=str(SHOTS / "security-inventory-search.png"), full_page=True)

    page.click("text=invoice-summarizer")
    page.wait_for_url(f"**/inventory/{estate.registration_id}/")
    text = page.locator("main").inner_text() if page.locator("main").count() else page.inner_text("body")
    for expected in (
        "Summarises supplier invoices",
        "bob",
        "carol",
        "finance sign-off",
        "db:prod:read",
        "client.activate",
        "How it is revoked",
    ):
        assert expected in text, expected
    page.screenshot(path=str(SHOTS / "security-explain.png"), full_page=True)

    page.click("nav.sidenav >> text=Dashboard")
    page.wait_for_url(f"{base}/dashboards/")
    from inventory.reports.charts import CHART_TITLES

    assert page.locator("canvas[data-chart]").count() == len(CHART_TITLES) == 8  # the 90-day activity axis too
    assert page.locator(".stat", has_text="Live clients").first.inner_text().split()[-1] == "3"
    page.screenshot(path=str(SHOTS / "security-dashboard.png"), full_page=True)

    page.click("nav.sidenav >> text=Framework report")
    page.wait_for_url(f"{base}/reports/frameworks/")
    body = page.inner_text("body")
    assert "66.7 % of live clients have an active owner — 1 does not." in body
    assert "NHI1:2025" in body and "Improper Offboarding" in body and "AML.M0029" in body
    page.screenshot(path=str(SHOTS / "security-frameworks.png"), full_page=True)
    page.click("text=List them >> nth=0")
    page.wait_for_url("**/inventory/?failing=*")
    assert page.locator("tbody tr[data-row]").count() >= 1
    context.close()


def test_ciso_picks_a_team_by_typing_part_of_its_name(live_server, browser, estate):
    """The team field is a text input whose <datalist> htmx fills as one types (at most 20 teams, never all of
    them on the page); picking a suggestion puts its slug in the field and the filter lists that team's clients."""
    base = live_server.url
    for i in range(30):
        TeamFactory(name=f"Payments squad {i:02d}", slug=f"payments-{i:02d}")
    context, page = login(browser, base, "ciso")
    page.goto(f"{base}/inventory/")
    options = page.locator("#id_team_options option")
    assert options.count() == 0
    page.click("#id_team")  # focusing asks for the first teams by name
    page.wait_for_selector("#id_team_options option[value=payments-19]", state="attached")
    assert options.count() == 20
    page.keyboard.type("atfor")  # inside "Platform"
    page.wait_for_selector("#id_team_options option[value=platform]", state="attached")
    assert [(o.get_attribute("value"), o.text_content()) for o in options.all()] == [("platform", "Platform")]
    # Chromium's datalist pop-up is not part of the page Playwright drives: pick as it does, with the option's value
    page.fill("#id_team", options.first.get_attribute("value"))
    page.click(".filters button[type=submit]")
    page.wait_for_url("**/inventory/?*team=platform*")
    rows = page.locator("tbody tr[data-row]")
    assert rows.count() == 1 and "invoice-summarizer" in rows.first.inner_text()
    assert page.input_value("#id_team") == "platform"
    assert page.inner_text("label[for=id_team]").endswith("Platform")
    page.screenshot(path=str(SHOTS / "security-inventory-team-picker.png"), full_page=True)
    context.close()
