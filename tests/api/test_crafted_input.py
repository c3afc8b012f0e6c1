"""Crafted keyset cursors on /inventory/ and /api/v1/clients/, and unmatched paths under /api/: a 4xx that says
what is wrong, never a 500 (these were 500s: the database, not Registrar, refused the value)."""

from __future__ import annotations

import base64
import json

import pytest
from rest_framework.test import APIClient

from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db


def cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


CRAFTED = [
    "garbage!!",
    base64.urlsafe_b64encode(b"\xff\xfe junk").decode(),
    cursor("just a string"),
    cursor([1, 2, 3]),
    cursor(["not a date", 5]),  # the default sort is by creation time
    cursor([{"dt": "2026-01-01T00:00:00"}, 5]),  # naive
    cursor([{"dt": 7}, 5]),
    cursor([{"dt": "2026-01-01T00:00:00+00:00"}, 2**70]),  # beyond bigint
    cursor([{"dt": "2026-01-01T00:00:00+00:00"}, "5"]),
    cursor([{"dt": "2026-01-01T00:00:00+00:00"}, True]),
    cursor([[1, 2], 5]),
    "W" * 4000,
    cursor("[" * 5000),
    base64.urlsafe_b64encode(b"[" * 5000).decode(),  # nested too deeply for Python's parser
]


@pytest.fixture
def some_clients(idp, owner):
    return [ClientFactory(idp=idp, owner=owner) for _ in range(3)]


@pytest.mark.parametrize("token", CRAFTED)
def test_a_crafted_cursor_is_a_400_from_the_api(security_user, some_clients, token):
    api = APIClient()
    api.force_authenticate(security_user)
    for param in ("after", "before"):
        response = api.get("/api/v1/clients/", {param: token})
        assert response.status_code == 400, response.content[:300]
        assert response.json() == {param: ["Invalid page cursor."]}


@pytest.mark.parametrize(
    ("sort", "token"),
    [
        ("name", cursor([5, 1])),
        ("name", cursor(["nul\x00byte", 1])),
        ("name", cursor(["x" * 5000, 1])),
        ("depth", cursor(["deep", 1])),
        ("depth", cursor([2**40, 1])),
        ("depth", cursor([1.5, 1])),
        ("expires", cursor([None, 0])),
        ("created", cursor([None, 1])),  # created_at is never NULL
    ],
)
def test_the_cursor_value_must_fit_the_sort_column(security_user, some_clients, sort, token):
    api = APIClient()
    api.force_authenticate(security_user)
    assert api.get("/api/v1/clients/", {"sort": sort, "after": token}).status_code == 400


@pytest.mark.parametrize("token", CRAFTED)
def test_a_crafted_cursor_is_a_400_page_on_inventory(client, security_user, some_clients, token):
    client.force_login(security_user)
    assert client.get("/inventory/", {"after": token}).status_code == 400


def test_real_cursors_still_page(security_user, some_clients):
    api = APIClient()
    api.force_authenticate(security_user)
    for sort in ("name", "-depth", "expires", "-created", "state"):
        first = api.get("/api/v1/clients/", {"sort": sort, "page_size": 2}).json()
        second = api.get(first["next"]).json()
        back = api.get(second["previous"]).json()
        assert len(first["results"]) == 2 and len(second["results"]) == 1
        assert [c["registration_id"] for c in back["results"]] == [c["registration_id"] for c in first["results"]]


def test_an_unmatched_api_path_is_a_json_404_even_for_a_post(security_user):
    api = APIClient(enforce_csrf_checks=True)
    api.force_authenticate(security_user)
    for path in ("/api/v1/clients/%C2%84/hold/", "/api/v1/nothing-here/", "/api/v1/tokens/1,2/revoke/"):
        response = api.post(path, {}, format="json")
        assert response.status_code == 404 and response.json() == {"detail": "No such endpoint."}, path
