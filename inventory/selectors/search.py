"""Inventory search and who sees which clients.

Search on PostgreSQL combines, as one OR of index-backed conditions (so the planner can BitmapOr them):

* full text: ``search_document @@ websearch_to_tsquery('english', q)`` over name + purpose (stored
  generated tsvector column, GIN);
* substrings: ``column ILIKE '%q%'`` over name and software id (GIN trigram);
* identifiers by prefix: ``column LIKE 'q%'`` over registration id, client id, SPIFFE ID (btree pattern ops);
* typos: ``q <% name`` (trigram word similarity, same GIN trigram index), word by word for several words;
* owners and teams: matching users/teams are looked up first (small tables), then ``owner_id = ANY(...)``.

SQLite (``make run``) has none of these; it searches an FTS5 trigram index (``inventory.search_index``) with
the same shape of condition: the phrase, or every word matching somewhere, each word as a substring of name,
purpose or software id (the index), an identifier prefix, or — for typos — a name word sharing enough
trigrams with it (candidates from the index, scored here like pg_trgm's word similarity). Without the index
(a SQLite older than 3.34) it falls back to ``icontains`` on the whole term.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import BooleanField, Q, QuerySet, Value
from django.db.models.expressions import RawSQL

from inventory.models import Client, Team
from inventory.search_index import FTS_TABLE, sqlite_fts_ready
from portal.roles import can_see_all_clients

# A stored generated tsvector column added by migration 0005_security_pg_trgm (PostgreSQL only; not a model
# field, so the ORM never writes it): to_tsvector('english', name || ' ' || purpose).
SEARCH_DOCUMENT_SQL = '"inventory_client"."search_document"'
# Purpose is searched by (stemmed) full text only: a substring test on long text costs on every candidate row.
SUBSTRING_COLUMNS = ("name", "software_id")  # ILIKE '%q%' (GIN trigram)
PREFIX_COLUMNS = ("registration_id", "idp_client_id", "spiffe_id")  # LIKE 'q%' (btree pattern ops)
# Typos are tolerated in names (short text); purposes get stemmed full text. Word similarity
# against long purposes costs ~10 µs a row in the recheck, too much when a common word matches thousands.
TYPO_COLUMNS = ("name",)
MAX_PEOPLE_MATCHES = 500  # owners/teams matched by a search term; more than that is not a useful filter


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


# pg_trgm's default word-similarity threshold (0.6) misses one-letter typos in short words
# ("invoce" vs "invoice" scores 0.57). Set per connection so ``q <% column`` stays an index operator.
WORD_SIMILARITY_THRESHOLD = 0.5


def configure_search_session(sender, connection, **kwargs):
    """``connection_created`` hook: session settings the search relies on (PostgreSQL only).

    JIT is switched off too: on the dashboard and report aggregates it spent ~0.5 s compiling to save
    nothing (they are index-backed scans of a few hundred thousand narrow rows at most)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('pg_trgm.word_similarity_threshold', %s, false), set_config('jit', 'off', false)",
            [str(WORD_SIMILARITY_THRESHOLD)],
        )


# --- visibility ------------------------------------------------------------------------------


def clients_visible_to(user) -> QuerySet[Client]:
    """Security and admins see every client; everyone else only the clients they own."""
    qs = Client.objects.all()
    if can_see_all_clients(user):
        return qs
    return qs.filter(owner_id=user.pk)


# --- search ----------------------------------------------------------------------------------


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _people_matching(term: str) -> tuple[list[int], list[int]]:
    """Ids of owners and teams whose name matches (typo-tolerant on PostgreSQL; one query there, two on SQLite)."""
    User = get_user_model()
    if is_postgres():
        like = f"%{_like_escape(term)}%"
        user_q = RawSQL(
            '("portal_user"."username" ILIKE %s OR %s <%% "portal_user"."username" '
            'OR ("portal_user"."first_name" || \' \' || "portal_user"."last_name") ILIKE %s)',
            (like, term, like),
            output_field=BooleanField(),
        )
        team_q = RawSQL(
            '("inventory_team"."name" ILIKE %s OR "inventory_team"."slug" ILIKE %s OR %s <%% "inventory_team"."name")',
            (like, like, term),
            output_field=BooleanField(),
        )
        # One round trip: both look-ups as one UNION ALL, each with its own LIMIT (and the teams' order), tagged.
        user_rows = User.objects.filter(user_q).annotate(is_team=Value(False)).values_list("is_team", "pk")
        team_rows = Team.objects.filter(team_q).annotate(is_team=Value(True)).values_list("is_team", "pk")
        rows = list(user_rows[:MAX_PEOPLE_MATCHES].union(team_rows[:MAX_PEOPLE_MATCHES], all=True))
        return [pk for is_team, pk in rows if not is_team], [pk for is_team, pk in rows if is_team]
    # SQLite: two queries (it allows no LIMIT inside a UNION's parts)
    users = User.objects.filter(
        Q(username__icontains=term) | Q(first_name__icontains=term) | Q(last_name__icontains=term)
    )
    teams = Team.objects.filter(Q(name__icontains=term) | Q(slug__icontains=term))
    return (
        list(users.values_list("pk", flat=True)[:MAX_PEOPLE_MATCHES]),
        list(teams.values_list("pk", flat=True)[:MAX_PEOPLE_MATCHES]),
    )


def _word_condition(word: str, *, typos: bool) -> tuple[str, list[Any]]:
    """``word`` as a substring of any searchable column (trigram GIN), or a near-miss of a word in name/purpose."""
    like = f"%{_like_escape(word)}%"
    parts = [f'"inventory_client"."{column}" ILIKE %s' for column in SUBSTRING_COLUMNS]
    parts += [f'"inventory_client"."{column}" LIKE %s' for column in PREFIX_COLUMNS]
    params: list[Any] = [like] * len(SUBSTRING_COLUMNS) + [_like_escape(word) + "%"] * len(PREFIX_COLUMNS)
    if typos:
        parts += [f'%s <%% "inventory_client"."{column}"' for column in TYPO_COLUMNS]
        params += [word] * len(TYPO_COLUMNS)
    return "(" + " OR ".join(parts) + ")", params


def client_search(qs: QuerySet[Client], term: str) -> QuerySet[Client]:
    """Filter ``qs`` to clients matching free text ``term`` (2 small look-ups + one condition)."""
    term = " ".join(term.split())[:200]
    if not term:
        return qs
    owner_ids, team_ids = _people_matching(term)
    people = Q(owner_id__in=owner_ids) if owner_ids else Q(pk__in=[])
    if team_ids:
        people |= Q(team_id__in=team_ids)
    if not is_postgres():
        return qs.filter(_sqlite_text(term) | people)
    parts = [f"{SEARCH_DOCUMENT_SQL} @@ websearch_to_tsquery('english'::regconfig, %s)"]
    params: list[Any] = [term]
    words = [w for w in term.split(" ") if len(w) >= 3]
    if len(words) > 1:
        # Several words: the whole phrase as a substring, or every word matching somewhere (typos allowed).
        phrase_sql, phrase_params = _word_condition(term, typos=False)
        parts.append(phrase_sql)
        params += phrase_params
        per_word = [_word_condition(w, typos=True) for w in words[:6]]
        parts.append("(" + " AND ".join(sql for sql, _ in per_word) + ")")
        for _, word_params in per_word:
            params += word_params
    else:
        word_sql, word_params = _word_condition(term, typos=len(term) >= 3)
        parts.append(word_sql)
        params += word_params
    # Only constant SQL fragments are joined here; the search term always travels as a parameter.
    matches = RawSQL("(" + " OR ".join(parts) + ")", params, output_field=BooleanField())  # noqa: S611
    return qs.filter(Q(matches) | people)


# --- SQLite: FTS5 trigram index ---------------------------------------------------------------------------

# Candidates for a typo are the names sharing most trigrams with the word (bm25 rank), scored in Python.
TYPO_CANDIDATES = 200
_ready: dict[str, bool] = {}


def _fts_ready() -> bool:
    """Whether this SQLite database has the index (checked once per database file and process)."""
    if connection.vendor != "sqlite":
        return False
    key = str(connection.settings_dict["NAME"])
    if not _ready.get(key):
        _ready[key] = sqlite_fts_ready(connection)
    return _ready[key]


def _fts_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase: with the trigram tokenizer, a case-insensitive substring match."""
    return '"' + text.replace('"', '""') + '"'


def trigrams(text: str) -> set[str]:
    """pg_trgm's trigrams: per word (runs of letters and digits), lower-cased, padded two spaces before and one
    after."""
    out: set[str] = set()
    for word in re.split(r"[^0-9a-z]+", text.lower()):
        if word:
            padded = f"  {word} "
            out.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return out


def word_similarity(term: str, text: str) -> float:
    """Close to pg_trgm's ``term <% text`` on a short text like a name: the share of ``term``'s trigrams that
    ``text`` has ("invoce" keeps 5 of its 7 in "invoice-summarizer")."""
    wanted = trigrams(term)
    return len(wanted & trigrams(text)) / len(wanted) if wanted else 0.0


def _typo_ids(word: str) -> list[int]:
    """Clients whose name has a word within WORD_SIMILARITY_THRESHOLD of ``word`` (one index query)."""
    inner = sorted({word.lower()[i : i + 3] for i in range(len(word) - 2)})
    if not inner:
        return []
    query = "name : (" + " OR ".join(_fts_phrase(t) for t in inner) + ")"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT rowid, name FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s ORDER BY rank LIMIT %s",  # noqa: S608
            [query, TYPO_CANDIDATES],
        )
        rows = cursor.fetchall()
    return [pk for pk, name in rows if word_similarity(word, name or "") > WORD_SIMILARITY_THRESHOLD]


def _sqlite_word(word: str, *, typos: bool) -> Q:
    """``word`` as a substring of name/purpose/software id, a prefix of an identifier, or a near-miss of a
    name word."""
    if len(word) >= 3:  # the trigram index matches substrings of three characters or more
        found = Q(pk__in=RawSQL(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [_fts_phrase(word)]))  # noqa: S611,S608
    else:
        found = Q(name__icontains=word) | Q(purpose__icontains=word) | Q(software_id__icontains=word)
    for column in PREFIX_COLUMNS:
        found |= Q(**{f"{column}__istartswith": word})
    if typos:
        ids = _typo_ids(word)
        if ids:
            found |= Q(pk__in=ids)
    return found


def _sqlite_text(term: str) -> Q:
    if not _fts_ready():
        text = Q(purpose__icontains=term)
        for column in SUBSTRING_COLUMNS + PREFIX_COLUMNS:
            text |= Q(**{f"{column}__icontains": term})
        return text
    words = [w for w in term.split(" ") if len(w) >= 3]
    if len(words) > 1:
        every_word = Q()
        for w in words[:6]:
            every_word &= _sqlite_word(w, typos=True)
        return _sqlite_word(term, typos=False) | every_word
    return _sqlite_word(term, typos=len(term) >= 3)
