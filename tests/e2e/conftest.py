"""Shared browser fixtures: Debian's Chromium driven by Playwright for Python (`make browser` installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.db import connections
from playwright.sync_api import sync_playwright

from portal.roles import Role
from tests.e2e.support import CHROMIUM, SHOTS


@pytest.fixture
def browser():
    # Playwright's sync API runs an event loop in this thread; our ORM calls here are plain sync code.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()
            # ORM calls made while Playwright's loop runs use connections bound to this context; close
            # them so they do not outlive the test and block dropping the test database.
            connections.close_all()


@pytest.fixture
def role_groups(transactional_db):
    """Data-migration rows (the role groups) are flushed between transactional tests: put them back."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)
