"""Fixtures of the invariant matrix (see tests/invariants/support.py)."""

from __future__ import annotations

import os

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import override_settings

from approvals import policy_store
from approvals.oauth2 import cache as oauth2_cache
from tests.invariants.support import SCIM_TOKEN, TamperableConnector, build_world


@pytest.fixture(autouse=True)
def _isolated(db, catalogue):
    """Fresh per-process caches (policy, catalogue, default IdP, rate limits), the SCIM door open."""
    # `make test` runs this matrix in both database stages; each must really be on the database it names.
    expected = os.environ.get("REGISTRAR_TEST_DATABASE")
    assert expected in (None, connection.vendor), f"expected {expected}, running on {connection.vendor}"
    cache.clear()
    policy_store.clear_cache()
    oauth2_cache.clear_caches()
    with (
        override_settings(REGISTRAR_SCIM_TOKEN=SCIM_TOKEN, REGISTRAR_INLINE_DELIVERY_TIMEOUT=5),
        TamperableConnector.registered(),
    ):
        yield
    TamperableConnector.remote.clear()
    cache.clear()
    policy_store.clear_cache()
    oauth2_cache.clear_caches()


@pytest.fixture
def world(_isolated):
    return build_world()
