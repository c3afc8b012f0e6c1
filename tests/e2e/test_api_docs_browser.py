"""The API docs page renders in a real browser under the site's Content-Security-Policy, from our own origin."""

from __future__ import annotations

import pytest

from tests.e2e.support import SHOTS, login

pytestmark = pytest.mark.e2e


def test_api_docs_render_without_a_cdn_or_a_csp_violation(live_server, browser, db, role_groups):
    from tests.factories import UserFactory

    UserFactory(username="sam", roles=["security"])
    context, page = login(browser, live_server.url, "sam")
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    outside: list[str] = []
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(live_server.url) else None)

    page.click("text=API docs")  # from the sidebar, as a user finds it
    page.locator(".swagger-ui .info .title").wait_for()
    assert "Registrar API" in page.inner_text(".swagger-ui .info .title")
    page.locator(".opblock-tag-section").first.wait_for()
    assert "/api/v1/requests/" in page.inner_text(".swagger-ui")
    page.screenshot(path=str(SHOTS / "api-docs.png"), full_page=False)
    context.close()
    assert not outside, f"the docs page loaded from elsewhere: {outside}"
    assert not problems, problems
