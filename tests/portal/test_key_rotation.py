"""manage.py rotate_encryption_key: every stored secret ends up under the current key, nothing else changes."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from inventory.models import Client, IdPConnection
from portal.audit import Actor
from portal.keyrotation import RotationResult, encrypted_columns, encryption_key_rotate, rotate_rows
from portal.models import AuditEvent
from tests.factories import ClientFactory, IdPFactory

pytestmark = pytest.mark.django_db
OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))


def raw(model, pk: int, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def readable_with(key: str, token: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(token.encode())
        return True
    except InvalidToken:
        return False


@pytest.fixture
def old_rows():
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[OLD]):
        idp = IdPFactory(name="secret-idp", secrets={"admin_client_secret": "s3cret"})
        client = ClientFactory(idp=idp, idp_state={"registration_access_token": "rat-123"})
        ClientFactory(idp=idp)  # no IdP state: an empty column stays empty
    return idp, client


def test_the_encrypted_columns_are_found_by_type():
    assert {f"{m._meta.label}.{f.name}" for m, f in encrypted_columns()} >= {
        "inventory.IdPConnection.secrets",
        "inventory.Client.idp_state",
    }


def test_rotation_rewrites_old_values_with_the_new_key(old_rows):
    idp, client = old_rows
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[NEW, OLD]):
        call_command("rotate_encryption_key")
    for model, pk, column in ((IdPConnection, idp.pk, "secrets"), (Client, client.pk, "idp_state")):
        token = raw(model, pk, column)
        assert readable_with(NEW, token) and not readable_with(OLD, token)
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[NEW]):  # the old key can go
        assert IdPConnection.objects.get(pk=idp.pk).secrets == {"admin_client_secret": "s3cret"}
        assert Client.objects.get(pk=client.pk).idp_state == {"registration_access_token": "rat-123"}
    event = AuditEvent.objects.get(action="encryption_key.rotated")
    assert event.after["rewritten"] == 2 and event.after["unreadable"] == 0
    assert "s3cret" not in str(event.after) and "rat-123" not in str(event.after)
    # Run again: everything is current, nothing rewritten.
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[NEW, OLD]):
        again = encryption_key_rotate(actor=Actor.system("test"))
    assert (again.rewritten, again.current) == (0, 2)


def test_dry_run_counts_and_changes_nothing(old_rows, capsys):
    idp, _ = old_rows
    before = raw(IdPConnection, idp.pk, "secrets")
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[NEW, OLD]):
        call_command("rotate_encryption_key", "--dry-run")
    assert "would rewrite 2" in capsys.readouterr().out
    assert raw(IdPConnection, idp.pk, "secrets") == before
    assert not AuditEvent.objects.filter(action="encryption_key.rotated").exists()


def test_a_value_no_key_can_read_is_reported_and_left_alone(old_rows):
    idp, _ = old_rows
    before = raw(IdPConnection, idp.pk, "secrets")
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[NEW, STRANGER]), pytest.raises(CommandError, match="2 value"):
        call_command("rotate_encryption_key")
    assert raw(IdPConnection, idp.pk, "secrets") == before


def test_a_value_changed_while_rotating_is_not_overwritten(old_rows):
    _, client = old_rows
    stale = raw(Client, client.pk, "idp_state")
    with override_settings(REGISTRAR_ENCRYPTION_KEYS=[NEW, OLD]):
        # A worker stores a rotated registration access token between the read and the write.
        Client.objects.filter(pk=client.pk).update(idp_state={"registration_access_token": "rat-456"})
        result = RotationResult()
        rotate_rows(Client, Client._meta.get_field("idp_state"), [(client.pk, stale)], result)
        assert (result.rewritten, result.changed_meanwhile) == (0, 1)
        assert Client.objects.get(pk=client.pk).idp_state == {"registration_access_token": "rat-456"}


def test_a_bad_batch_size_is_refused():
    with pytest.raises(CommandError, match="batch-size"):
        call_command("rotate_encryption_key", "--batch-size", "0")
