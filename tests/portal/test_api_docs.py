"""/api/docs/ (Swagger UI) is served from Registrar's own origin and needs no inline script or style."""

from __future__ import annotations

import re

import pytest


@pytest.mark.django_db
def test_api_docs_page_loads_nothing_from_elsewhere_and_nothing_inline(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(url.startswith("/") for url in urls), urls  # no CDN
    assert "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "script-src 'self'" in page["Content-Security-Policy"]

    script = client.get(next(url for url in urls if "script=" in url))
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()  # Swagger UI is pointed at our schema
