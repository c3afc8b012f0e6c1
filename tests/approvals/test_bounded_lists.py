"""Lists never count more than the threshold (issue 22): the pages' counts stop at REGISTRAR_COUNT_THRESHOLD + 1
and show "N+", and the big API lists page by keyset (no COUNT, no OFFSET), in their own order."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import selectors
from approvals.models import RegistrationRequest
from inventory.choices import RiskTier
from tests.approvals.test_queue_views import bulk_pending
from tests.approvals.test_requests_api import api_for
from tests.factories import TokenFactory, UserFactory


def _counts(queries) -> list[str]:
    """The queries that count rows at the top level (``SELECT COUNT(…) FROM …``)."""
    return [q["sql"] for q in queries if re.match(r"\s*SELECT\s+COUNT\(", q["sql"], re.IGNORECASE)]


def _every_count_is_bounded(queries) -> list[str]:
    counts = _counts(queries)
    assert counts, "expected the page to count its rows"
    for sql in counts:
        assert re.search(r"\bLIMIT\s+\d+", sql, re.IGNORECASE), f"unbounded COUNT: {sql}"
    return counts


@pytest.fixture
def bob(client, approver):
    client.force_login(approver)
    return client


@pytest.fixture
def pending(owner, team, idp):
    def make(n):
        return bulk_pending(n, owner=owner, team=team, idp=idp, token=TokenFactory(owner=owner))

    return make


def test_queue_count_stops_at_the_threshold_and_says_plus(bob, pending, settings, monkeypatch):
    settings.REGISTRAR_COUNT_THRESHOLD = 10
    monkeypatch.setattr("approvals.views.QUEUE_PAGE_SIZE", 4)
    pending(15)
    with CaptureQueriesContext(connection) as ctx:
        html = bob.get(reverse("approvals:queue")).content.decode()
    counts = _every_count_is_bounded(ctx.captured_queries)
    assert any("LIMIT 11" in sql for sql in counts)
    assert "Showing 1–4 of 10+" in html and "Page 1 of 3+" in html
    assert "of 15" not in html


def test_queue_count_below_the_threshold_is_exact(bob, pending, settings, monkeypatch):
    settings.REGISTRAR_COUNT_THRESHOLD = 10
    monkeypatch.setattr("approvals.views.QUEUE_PAGE_SIZE", 4)
    pending(7)
    with CaptureQueriesContext(connection) as ctx:
        html = bob.get(reverse("approvals:queue")).content.decode()
    _every_count_is_bounded(ctx.captured_queries)
    assert "Showing 1–4 of 7<" in html and "Page 1 of 2<" in html and "of 7+" not in html


def test_the_threshold_is_ten_thousand_by_default():
    from portal.paging import DEFAULT_COUNT_THRESHOLD, count_label

    assert DEFAULT_COUNT_THRESHOLD == 10_000
    assert count_label(10_001, 10_000) == "10,000+" and count_label(10_000, 10_000) == "10,000"


def _walk(api, url, params, *, direction="next"):
    """Every page from ``url`` following ``direction`` links: (pages of ids, queries)."""
    pages, queries = [], []
    while url:
        with CaptureQueriesContext(connection) as ctx:
            response = api.get(url, params)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        pages.append(body)
        queries += ctx.captured_queries
        url, params = body[direction], None
        if url:
            url = urlsplit(url).path + "?" + urlsplit(url).query
    return pages, queries


def test_requests_api_pages_by_keyset_in_queue_order_without_gaps(approver, pending):
    pending(23)  # one created_at for all: the pk breaks the ties
    api = api_for(approver)
    expected = list(selectors.requests_for_api().values_list("public_id", flat=True))
    assert len(expected) == 23
    pages, queries = _walk(api, "/api/v1/requests/", {"page_size": 4})
    seen = [row["id"] for page in pages for row in page["results"]]
    assert seen == expected  # the queue's order (high tier first), each once, none missing
    assert [len(p["results"]) for p in pages] == [4, 4, 4, 4, 4, 3]
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    assert not _counts(queries)  # keyset: nothing counted
    assert not any(re.search(r"\bOFFSET\b", q["sql"]) for q in queries)
    # and back again from the last page by the previous links
    last = urlsplit(pages[-1]["previous"])
    back, _ = _walk(api, last.path + "?" + last.query, None, direction="previous")
    assert [row["id"] for page in reversed(back) for row in page["results"]] == expected[:20]


def test_requests_api_filters_still_apply_across_pages(approver, pending):
    pending(12)  # alternating high / medium
    api = api_for(approver)
    pages, _ = _walk(api, "/api/v1/requests/", {"page_size": 2, "tier": "medium"})
    seen = [row["id"] for page in pages for row in page["results"]]
    assert seen == list(
        selectors.requests_for_api().filter(risk_tier=RiskTier.MEDIUM).values_list("public_id", flat=True)
    )
    assert len(seen) == 6


def test_my_requests_and_tokens_page_by_keyset(owner, pending):
    pending(9)
    tokens = [TokenFactory(owner=owner) for _ in range(6)]  # plus the one pending() made
    api = api_for(owner)
    pages, _ = _walk(api, "/api/v1/my-requests/", {"page_size": 4})
    assert [r["id"] for p in pages for r in p["results"]] == list(
        selectors.requests_of_owner(owner).values_list("public_id", flat=True)
    )
    pages, _ = _walk(api, "/api/v1/tokens/", {"page_size": 3})
    ids = [r["id"] for p in pages for r in p["results"]]
    assert len(ids) == len(set(ids)) == 7 and {t.pk for t in tokens} <= set(ids)


def _token(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        _token([1, {"dt": "2026-01-01T00:00:00+00:00"}, 5]) + "x",
        _token(["high", {"dt": "2026-01-01T00:00:00+00:00"}, 5]),  # text where the tier rank is a number
        _token([1, {"dt": "2026-01-01T00:00:00"}, 5]),  # naive datetime
        _token([1, {"dt": "2026-01-01T00:00:00+00:00"}, 0]),  # no such id
        _token([1, 5]),  # too short
        _token({"a": 1}),
    ],
)
def test_a_crafted_cursor_is_a_clear_400(approver, pending, cursor):
    pending(3)
    before = RegistrationRequest.objects.count()
    for param in ("after", "before"):
        response = api_for(UserFactory(roles=["approver"])).get("/api/v1/requests/", {param: cursor})
        assert response.status_code == 400 and response.json() == {param: ["Invalid page cursor."]}
    assert RegistrationRequest.objects.count() == before


def test_small_lists_keep_limit_offset_with_a_bounded_count(admin_user, settings):
    settings.REGISTRAR_COUNT_THRESHOLD = 2
    for _ in range(4):
        UserFactory()
    api = api_for(admin_user)
    with CaptureQueriesContext(connection) as ctx:
        body = api.get("/api/v1/people/", {"limit": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2  # 3 = the threshold + 1: "more than 2"
    _every_count_is_bounded(ctx.captured_queries)
    settings.REGISTRAR_COUNT_THRESHOLD = 100
    assert api.get("/api/v1/people/", {"limit": 2}).json()["count"] == 5


# --- the home tiles and the review queue's badge: on every page, so bounded too ---------------------------------


def _home_queries(user) -> list[str]:
    from portal.home import home_summary

    with CaptureQueriesContext(connection) as ctx:
        summary = home_summary(user)
    assert all(str(v) for v in summary.values())
    return [q["sql"] for q in ctx.captured_queries]


@pytest.mark.django_db
def test_home_tiles_and_the_badge_stop_at_the_threshold_and_say_plus(client, owner, idp, settings):
    from datetime import timedelta

    from django.utils import timezone

    from inventory.counts import counts_fold
    from portal.home import home_summary
    from tests.factories import ClientFactory, RequestFactory

    settings.REGISTRAR_COUNT_THRESHOLD = 3
    person = UserFactory(roles=["approver", "owner"])
    client.force_login(person)
    soon = timezone.now() + timedelta(days=1)
    ClientFactory.create_batch(2, owner=person, idp=idp, expires_at=soon)
    RequestFactory.create_batch(2, owner=owner, state="pending")
    assert home_summary(person) == {  # (the person's roles are read once, then remembered)
        "my_live_clients": 2,
        "expiring_soon": 2,
        "pending_approvals": 2,
        "my_pending_requests": 0,
    }
    small = _home_queries(person)

    ClientFactory.create_batch(6, owner=person, idp=idp, expires_at=soon)
    counts_fold()
    RequestFactory.create_batch(9, owner=owner, state="pending")
    RequestFactory.create_batch(5, owner=person, state="pending")
    large = _home_queries(person)
    assert len(large) == len(small)  # the same statements whatever the numbers
    for sql in large:  # counts of the request or client table stop at the threshold + 1
        if re.search(r"\b(approvals_registrationrequest|inventory_client)\b", sql):
            assert re.search(r"\bLIMIT 4\b", sql), f"unbounded count: {sql}"
    tiles = home_summary(person)
    # live clients come from the counts (exact, a small read); the others are bounded
    assert {k: str(v) for k, v in tiles.items()} == {
        "my_live_clients": "8",
        "expiring_soon": "3+",
        "pending_approvals": "3+",
        "my_pending_requests": "3+",
    }
    assert tiles["pending_approvals"] == 4  # counted up to the threshold + 1

    html = client.get("/").content.decode()
    assert re.search(r'id="nav-pending-count"[^>]*title="3\+ waiting for a decision"', html)
    assert '<span class="stat-value">3+</span>' in html
