"""Helpers for the browser tests (fixtures live in conftest.py)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "pw-for-tests-1"  # tests.factories.UserFactory's password


def login(browser, base: str, username: str):
    """Sign in through the real login form; returns (context, page) on the home page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return context, page


@contextmanager
def viewport_width(page, width: int):
    """The page at ``width`` px wide for the block, then back to its size."""
    size = page.viewport_size
    page.set_viewport_size({"width": width, "height": size["height"]})
    try:
        yield page
    finally:
        page.set_viewport_size(size)


def assert_fits_a_laptop(page, width: int = 1280) -> None:
    """At ``width`` px every table is in view: none scrolls sideways (its buttons would be out of sight)."""
    with viewport_width(page, width):
        overflowing = page.evaluate(
            "() => [...document.querySelectorAll('.table-wrap')]"
            ".filter(w => w.scrollWidth > w.clientWidth).map(w => [w.scrollWidth, w.clientWidth])"
        )
    assert not overflowing, f"tables scroll sideways at {width} px (content, visible width): {overflowing}"


def assert_actions_in_view(page, width: int = 1024) -> None:
    """At ``width`` px (a narrow desktop, where wide tables do scroll) every row's buttons are still in sight:
    the actions column sticks to the right edge of its scrolling frame."""
    with viewport_width(page, width):
        hidden = page.evaluate(
            "() => [...document.querySelectorAll('.table-wrap')].flatMap(w => {"
            " const frame = w.getBoundingClientRect();"
            " return [...w.querySelectorAll('.col-actions .btn')].filter(b => {"
            "  const r = b.getBoundingClientRect(); return r.right > frame.right + 0.5 || r.left < frame.left; })"
            " .map(b => b.textContent.trim()); })"
        )
    assert not hidden, f"buttons out of sight at {width} px: {hidden}"
