"""Inventory free-text search: PostgreSQL full text + trigram typos; icontains fallback (SQLite path)."""

from __future__ import annotations

import pytest
from django.db import connection

from inventory.models import Client
from inventory.selectors import search
from inventory.selectors.search import client_search
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def clients(idp):
    olivia = UserFactory(username="olivia.owner", first_name="Olivia", last_name="Ostrander", roles=["owner"])
    payments = TeamFactory(name="Payments Platform", slug="payments")
    return {
        "invoice": ClientFactory(
            name="invoice-summarizer",
            purpose="Summarises supplier invoices for finance",
            idp=idp,
            owner=olivia,
            team=payments,
            idp_client_id="kc-7f3a9e",
            software_id="com.example.invoicer",
            spiffe_id="spiffe://prod.example/ns/fin/sa/inv",
        ),
        "triage": ClientFactory(
            name="ticket-triage-bot",
            purpose="Labels incoming support tickets",
            idp=idp,
            idp_client_id="kc-000111",
            software_id="com.example.triage",
        ),
        "calendar": ClientFactory(
            name="calendar-helper", purpose="Books meeting rooms", idp=idp, idp_client_id="kc-222333"
        ),
    }


def names(qs) -> set[str]:
    return set(qs.values_list("name", flat=True))


@pytest.mark.parametrize(
    "term",
    [
        # PostgreSQL's trigram similarity and stemmed full text; SQLite (make run) matches substrings only
        pytest.param("invoce", marks=pytest.mark.postgres_only),  # typo in the name (trigram word similarity)
        pytest.param("invoice-sumarizer", marks=pytest.mark.postgres_only),  # typo inside the hyphenated name
        pytest.param("invoce sumarizer", marks=pytest.mark.postgres_only),  # two misspelt words, each on its own
        pytest.param("finance supplier", marks=pytest.mark.postgres_only),  # full text, any word order
        "supplier invoices",  # full text over the purpose
        pytest.param("summarising", marks=pytest.mark.postgres_only),  # stemmed full text ("summarises")
        "kc-7f3a9e",  # client_id at the IdP
        "kc-7f3",  # client_id prefix
        "invoicer",  # software_id
        "spiffe://prod.example/ns/fin",  # SPIFFE ID prefix
        "olivia.owner",  # owner username
        "Ostrander",  # owner's name
        "Payments",  # team name
    ],
)
def test_search_finds_the_client(clients, term):
    assert names(client_search(Client.objects.all(), term)) == {"invoice-summarizer"}


def test_search_by_registration_id(clients):
    reg = clients["triage"].registration_id
    assert names(client_search(Client.objects.all(), reg)) == {"ticket-triage-bot"}


def test_search_misses_unrelated_terms(clients):
    assert names(client_search(Client.objects.all(), "kubernetes")) == set()


def test_blank_search_is_no_filter(clients):
    assert client_search(Client.objects.all(), "   ").count() == 3


def test_like_wildcards_are_literal(clients):
    assert names(client_search(Client.objects.all(), "%")) == set()
    assert names(client_search(Client.objects.all(), "kc_7")) == set()


@pytest.mark.postgres_only
def test_search_runs_on_postgresql_index_operators(clients):
    assert connection.vendor == "postgresql"
    sql = str(client_search(Client.objects.all(), "invoce").query)
    assert "websearch_to_tsquery" in sql and "<%" in sql and "ILIKE" in sql


def test_sqlite_fallback_uses_icontains(clients, monkeypatch):
    """The SQLite branch (make run) matches substrings, not typos; exercised here through the same ORM."""
    monkeypatch.setattr(search, "is_postgres", lambda: False)
    qs = client_search(Client.objects.all(), "SUPPLIER")
    assert "websearch_to_tsquery" not in str(qs.query)
    assert names(qs) == {"invoice-summarizer"}
    assert names(client_search(Client.objects.all(), "triage-bot")) == {"ticket-triage-bot"}
    assert names(client_search(Client.objects.all(), "Payments")) == {"invoice-summarizer"}
    assert names(client_search(Client.objects.all(), "invoce")) == set()


@pytest.mark.postgres_only  # trigram similarity
def test_search_page_with_typo(client, security_user, clients):
    client.force_login(security_user)
    response = client.get("/inventory/", {"q": "invoce"})
    assert response.status_code == 200
    shown = [c.name for c in response.context["page"].items]
    assert shown == ["invoice-summarizer"]
