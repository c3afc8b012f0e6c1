"""Inventory free-text search: PostgreSQL full text + trigram typos; SQLite's FTS5 trigram index with the same
tolerance for typos and word order; icontains where SQLite has no trigram tokenizer."""

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
        # Typos and word order: pg_trgm + full text on PostgreSQL, the FTS5 trigram index on SQLite
        "invoce",  # typo in the name (trigram word similarity)
        "invoice-sumarizer",  # typo inside the hyphenated name
        "invoce sumarizer",  # two misspelt words, each on its own
        "INVOCE",  # any case
        "finance supplier",  # any word order
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


def test_sqlite_without_the_trigram_tokenizer_falls_back_to_icontains(clients, monkeypatch):
    """A SQLite older than 3.34 has no trigram index: substrings only, no typos; exercised through the ORM."""
    monkeypatch.setattr(search, "is_postgres", lambda: False)
    monkeypatch.setattr(search, "_fts_ready", lambda: False)
    qs = client_search(Client.objects.all(), "SUPPLIER")
    assert "websearch_to_tsquery" not in str(qs.query)
    assert names(qs) == {"invoice-summarizer"}
    assert names(client_search(Client.objects.all(), "triage-bot")) == {"ticket-triage-bot"}
    assert names(client_search(Client.objects.all(), "Payments")) == {"invoice-summarizer"}
    assert names(client_search(Client.objects.all(), "invoce")) == set()


def test_search_page_with_typo(client, security_user, clients):
    client.force_login(security_user)
    response = client.get("/inventory/", {"q": "invoce"})
    assert response.status_code == 200
    shown = [c.name for c in response.context["page"].items]
    assert shown == ["invoice-summarizer"]


# --- issue 19: typo-tolerant search on SQLite too ---------------------------------------------------------------


@pytest.mark.parametrize("term", ["ticket triage", "tiket triage", "triage ticket", "ticket-triage"])
def test_words_of_a_hyphenated_name_find_it_in_any_order_and_with_typos(clients, term):
    assert names(client_search(Client.objects.all(), term)) == {"ticket-triage-bot"}


def test_sqlite_searches_its_trigram_index(clients):
    sql = str(client_search(Client.objects.all(), "invoce").query)
    assert ("inventory_client_fts" in sql) == (connection.vendor == "sqlite")
    assert ("websearch_to_tsquery" in sql) == (connection.vendor == "postgresql")


def test_the_index_follows_every_write(clients, idp):
    """Triggers keep SQLite's index current for ORM saves, queryset updates and deletes alike."""
    triage = clients["triage"]
    triage.name = "helpdesk-router"
    triage.save()
    assert names(client_search(Client.objects.all(), "helpdesk")) == {"helpdesk-router"}
    assert names(client_search(Client.objects.all(), "ticket-triage")) == set()
    Client.objects.filter(pk=triage.pk).update(purpose="Routes zendesk conversations")
    assert names(client_search(Client.objects.all(), "zendesk conversations")) == {"helpdesk-router"}
    Client.objects.filter(pk=clients["calendar"].pk).delete()
    ClientFactory(name="standup-notes", purpose="Takes notes", idp=idp)
    assert names(client_search(Client.objects.all(), "calendar")) == set()
    assert names(client_search(Client.objects.all(), "standup")) == {"standup-notes"}


def test_word_similarity_is_pg_trgm_like():
    assert search.word_similarity("invoce", "invoice-summarizer") > search.WORD_SIMILARITY_THRESHOLD
    assert search.word_similarity("sumarizer", "invoice-summarizer") > search.WORD_SIMILARITY_THRESHOLD
    assert search.word_similarity("kubernetes", "invoice-summarizer") < search.WORD_SIMILARITY_THRESHOLD
    assert search.word_similarity("triage", "ticket-triage-bot") == 1.0


def test_migrate_puts_back_an_index_a_table_rebuild_dropped(clients):
    from inventory.search_index import TRIGGERS, ensure_sqlite_fts, sqlite_fts_ready

    if connection.vendor != "sqlite":
        assert ensure_sqlite_fts(connection) is False and not sqlite_fts_ready(connection)  # PostgreSQL: no-op
        return
    with connection.cursor() as cursor:
        for name in TRIGGERS:  # what SQLite's schema editor does to a table's triggers when it alters the table
            cursor.execute(f"DROP TRIGGER {name}")
    assert not sqlite_fts_ready(connection)
    Client.objects.filter(pk=clients["calendar"].pk).update(name="room-booker")  # missed by the index
    assert ensure_sqlite_fts(connection) is True and sqlite_fts_ready(connection)
    assert names(client_search(Client.objects.all(), "room-booker")) == {"room-booker"}  # rebuilt from the table
    assert ensure_sqlite_fts(connection) is False  # nothing left to do
