"""portal.rawsql: hand-written statements that must behave exactly like the ORM they stand in for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import InitialAccessToken, RegistrationRequest
from approvals.oauth2.credentials import _token_with_owner
from inventory.models import Client, IdPConnection
from portal.crypto import hash_token
from portal.models import User
from portal.rawsql import InsertStatement, ModelColumns
from tests.factories import ClientFactory, IdPFactory, RequestFactory, TeamFactory, TokenFactory, UserFactory

pytestmark = pytest.mark.django_db


def _row(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def test_model_columns_load_equals_the_orm_instance():
    idp = IdPFactory(name="cols-idp", kind="dry-run", config={"issuer": "https://x", "nested": {"a": [1, 2]}})
    columns = ModelColumns(IdPConnection, "i")
    row = _row(f"SELECT {columns.select(connection)} FROM inventory_idpconnection i WHERE i.id = %s", [idp.pk])

    loaded = columns.load(row, 0, connection)

    orm = IdPConnection.objects.get(pk=idp.pk)
    assert isinstance(loaded, IdPConnection) and not loaded._state.adding
    for field in IdPConnection._meta.concrete_fields:
        assert getattr(loaded, field.attname) == getattr(orm, field.attname), field.name
    assert loaded.config == {"issuer": "https://x", "nested": {"a": [1, 2]}}  # JSON decoded, not a string
    assert loaded.created_at.tzinfo is not None


def test_model_columns_refuse_to_defer_what_is_not_there():
    with pytest.raises(ValueError, match="nope"):
        ModelColumns(IdPConnection, "i", defer=["nope"])
    with pytest.raises(ValueError, match="id"):
        ModelColumns(IdPConnection, "i", defer=["id"])


def test_model_columns_defer_by_field_name_or_column_attname():
    by_name = ModelColumns(InitialAccessToken, "t", defer=["owner"])
    by_attname = ModelColumns(InitialAccessToken, "t", defer=["owner_id"])
    assert "owner_id" not in by_name.attnames and by_name.attnames == by_attname.attnames
    assert len(by_name) == len(InitialAccessToken._meta.concrete_fields) - 1


def test_model_columns_load_returns_none_for_an_outer_join_miss():
    user = UserFactory()
    columns = ModelColumns(IdPConnection, "i")
    row = _row(
        f"SELECT u.id, {columns.select(connection)} FROM portal_user u "
        "LEFT JOIN inventory_idpconnection i ON i.id = -1 WHERE u.id = %s",
        [user.pk],
    )
    assert row[0] == user.pk
    assert columns.load(row, 1, connection) is None


def test_token_lookup_brings_owner_team_idp_and_live_clients_in_one_query(django_assert_num_queries):
    owner = UserFactory(username="lookup-owner")
    team = TeamFactory(name="lookup-team", slug="lookup-team")
    idp = IdPFactory(name="lookup-idp", kind="dry-run", secrets={"admin_client_secret": "s3cret"})
    token = TokenFactory(
        owner=owner, team=team, idp=idp, plaintext="rat_lookup_" + "z" * 30, allowed_scopes=["tickets:read"]
    )
    for state in ("active", "active", "suspended", "retired", "expired"):
        ClientFactory(owner=owner, state=state)
    ClientFactory(state="active")  # someone else's

    with django_assert_num_queries(1):
        found = _token_with_owner(hash_token("rat_lookup_" + "z" * 30))

    assert found.pk == token.pk and found.allowed_scopes == ["tickets:read"]
    assert found.owner == owner and found.owner.username == "lookup-owner"
    assert found.team == team and found.idp == idp
    assert found.owner_live_clients == 3  # active, active, suspended
    with django_assert_num_queries(0):
        assert (found.owner.is_active, found.team.slug, found.idp.kind) == (True, "lookup-team", "dry-run")
    # the IdP's credentials (encrypted) and the owner's password hash are not loaded, until read
    assert found.idp.get_deferred_fields() == {"secrets"} and found.owner.get_deferred_fields() == {"password"}
    with django_assert_num_queries(1):
        assert found.idp.secrets == {"admin_client_secret": "s3cret"}  # loaded and decrypted on first read


def test_token_lookup_without_team_or_idp_and_unknown_hash():
    token = TokenFactory(owner=UserFactory(), plaintext="rat_lookup_" + "y" * 30)
    found = _token_with_owner(hash_token("rat_lookup_" + "y" * 30))
    assert found.pk == token.pk and found.team is None and found.idp is None and found.owner_live_clients == 0
    assert _token_with_owner(hash_token("rat_nobody")) is None


def test_insert_statement_assigns_the_auto_pk_and_stores_what_the_orm_reads_back():
    owner = UserFactory()
    before = timezone.now()
    request = RegistrationRequest(
        public_id="reg_rawsql_1",
        state=RequestState.PENDING,
        metadata={"scope": "a b", "jwks": {"keys": []}},
        purpose="raw insert",
        requested_scopes=["a", "b"],
        granted_scopes=["a"],
        owner=owner,
    )

    InsertStatement(RegistrationRequest).insert(request)

    assert request.pk is not None and not request._state.adding
    stored = RegistrationRequest.objects.get(pk=request.pk)
    assert stored.public_id == "reg_rawsql_1" and stored.owner == owner
    assert stored.metadata == {"scope": "a b", "jwks": {"keys": []}}
    assert stored.requested_scopes == ["a", "b"] and stored.granted_scopes == ["a"]
    assert stored.created_at >= before and stored.created_at == request.created_at  # auto_now_add applied


def test_insert_statement_failure_writes_nothing():
    from django.db import IntegrityError, transaction

    UserFactory(username="taken")
    duplicate = User(username="taken", email="x@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        InsertStatement(User).insert(duplicate)
    assert User.objects.filter(username="taken").count() == 1


@pytest.mark.postgres_only  # from_select is PostgreSQL's (jsonb_populate_record)
def test_from_select_writes_what_save_would_write():
    """One jsonb parameter expanded into the row type: every value comes back as the ORM wrote it."""
    owner, team = UserFactory(), TeamFactory()
    decided = timezone.now().replace(microsecond=123456)
    request = RegistrationRequest(
        public_id="reg_json_1",
        state=RequestState.APPROVED,
        metadata={"client_name": 'é "q"', "n": [1, None]},
        client_name="ünï",
        purpose="json row",
        requested_scopes=["a"],
        granted_scopes=[],
        requested_ttl=3600,
        owner=owner,
        team=team,
        internal_only=True,
        source_ip="2001:db8::1",
        decided_at=decided,
        verdict={},
        reasons=[],
    )
    sql, params = InsertStatement(RegistrationRequest).from_select(request, connection, expressions={})
    assert len(params) == 1
    row = _row(sql + " RETURNING id", params)

    stored = RegistrationRequest.objects.get(pk=row[0])
    assert stored.metadata == {"client_name": 'é "q"', "n": [1, None]} and stored.client_name == "ünï"
    assert (stored.owner_id, stored.team_id, stored.token_id, stored.requested_ttl) == (owner.pk, team.pk, None, 3600)
    assert stored.internal_only is True and stored.source_ip == "2001:db8::1"
    assert stored.decided_at == decided and stored.created_at == request.created_at  # microseconds kept
    assert stored.granted_ttl is None and stored.requested_scopes == ["a"]


@pytest.mark.postgres_only  # from_select is PostgreSQL's (jsonb_populate_record)
def test_from_select_refuses_what_the_column_refuses_and_what_json_cannot_carry():
    from django.db import DataError, transaction

    too_long = RegistrationRequest(public_id="reg_" + "x" * 80, owner=UserFactory(), metadata={})
    sql, params = InsertStatement(RegistrationRequest).from_select(too_long, connection, expressions={})
    with pytest.raises(DataError), transaction.atomic():
        _row(sql, params)  # the column's length is checked, not silently truncated
    assert not RegistrationRequest.objects.filter(public_id__startswith="reg_xxx").exists()

    with pytest.raises(TypeError, match="expiry_overshoot_seconds"):  # a type not on from_select's list
        InsertStatement(Client).from_select(Client(), connection, expressions={})


def _pending(token, public_id: str) -> tuple[RegistrationRequest, object]:
    from portal.audit import Actor, audit_event

    request = RequestFactory.build(
        public_id=public_id,
        owner=token.owner,
        token=token,
        state=RequestState.PENDING,
        reasons=[{"code": "x"}],
        metadata={"client_name": "n"},
    )
    event = audit_event(
        actor=Actor.agent("token t"),
        action="registration.pending",
        object_type="registration_request",
        object_id=public_id,
        after={"state": "pending"},
    )
    return request, event


def test_request_and_event_are_written_only_while_the_token_has_a_use_left():
    from approvals.oauth2.credential_use import insert_with_event
    from portal.audit import verify_chain
    from portal.models import AuditEvent
    from portal.tlog.sequencer import log_seal

    now = timezone.now()
    token = TokenFactory(owner=UserFactory(), plaintext="rat_use_" + "q" * 30, max_uses=1)
    request, event = _pending(token, "reg_first")
    assert insert_with_event(request, event, token_id=token.pk, now=now) is True
    stored = RegistrationRequest.objects.get(pk=request.pk)
    assert (stored.public_id, stored.token_id, stored.state, stored.reasons) == (
        "reg_first",
        token.pk,
        RequestState.PENDING,
        [{"code": "x"}],
    )
    assert AuditEvent.objects.get(pk=event.pk).object_id == "reg_first"
    token.refresh_from_db()
    assert token.uses == 1 and token.last_used_at == now

    # used up: nothing is written, no event either
    request, event = _pending(token, "reg_second")
    assert insert_with_event(request, event, token_id=token.pk, now=now) is False
    assert not RegistrationRequest.objects.filter(public_id="reg_second").exists()
    assert AuditEvent.objects.count() == 1
    assert InitialAccessToken.objects.get(pk=token.pk).uses == 1

    expired = TokenFactory(owner=UserFactory(), plaintext="rat_use_" + "r" * 30, expires_at=now - timedelta(seconds=1))
    request, event = _pending(expired, "reg_expired")
    assert insert_with_event(request, event, token_id=expired.pk, now=now) is False
    assert InitialAccessToken.objects.get(pk=expired.pk).uses == 0
    assert not RegistrationRequest.objects.filter(public_id="reg_expired").exists()

    # without a token (software statement, parent credentials) the request is written unconditionally
    request, event = _pending(token, "reg_statement")
    request.token = None
    assert insert_with_event(request, event, token_id=None, now=now) is True
    assert RegistrationRequest.objects.get(public_id="reg_statement").token_id is None
    assert log_seal().sealed == 2
    assert verify_chain() == (2, None)


@pytest.mark.postgres_only  # server-side prepared statements (pg_prepared_statements)
def test_hot_statements_are_prepared_on_the_server_after_a_few_runs():
    """DATABASE_PREPARED_STATEMENTS (on by default): the intake's token lookup is planned once per connection,
    not on every registration (planning it cost PostgreSQL more CPU than running it). Off, nothing is prepared."""
    enabled = connection.settings_dict["OPTIONS"].get("prepare_threshold") is not None
    token = TokenFactory(owner=UserFactory())

    def prepared_lookups() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall() if "token_hash" in row[0] and "FROM" in row[0]]

    assert prepared_lookups() == []
    for _ in range(6):  # psycopg prepares a statement on its 5th run on a connection
        assert _token_with_owner(token.token_hash).pk == token.pk
    assert bool(prepared_lookups()) is enabled
