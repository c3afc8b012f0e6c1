"""IdP credentials: write-only in Django admin and `manage.py set_idp_secret`, encrypted at rest, audited without
values; "test connection" calls the real test IdP with the stored credentials and reports without leaking them."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from inventory.choices import IdPKind
from inventory.idp_secrets import IdPSecretError, idp_connection_test, idp_secret_status, idp_secrets_set
from inventory.models import IdPConnection
from portal.audit import Actor
from portal.models import AuditEvent
from tests.factories import IdPFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cret-value-that-must-never-show-7c1f"


def _raw_secrets_column(idp) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM inventory_idpconnection WHERE id = %s", [idp.pk])
        return cursor.fetchone()[0]


def _events_text() -> str:
    return json.dumps([[e.action, e.before, e.after, e.reason] for e in AuditEvent.objects.all()], default=str)


@pytest.fixture
def rfc_idp(oidc_idp):
    config, _secrets = oidc_idp.connector_config()
    return IdPFactory(name="oidc-test", kind=IdPKind.RFC7591, config=config)


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


# --- the service -------------------------------------------------------------------------------------------


def test_set_is_encrypted_at_rest_and_audited_by_name_only(rfc_idp):
    assert idp_secret_status(rfc_idp) == {"initial_access_token": False, "admin_token": False}
    changed = idp_secrets_set(idp=rfc_idp, actor=Actor.system("test"), values={"initial_access_token": SECRET})

    assert changed == ["initial_access_token"]
    assert IdPConnection.objects.get(pk=rfc_idp.pk).secrets == {"initial_access_token": SECRET}
    assert SECRET not in _raw_secrets_column(rfc_idp)
    (event,) = AuditEvent.objects.filter(action="idp.secrets_set")
    assert event.object_id == str(rfc_idp.pk)
    assert event.before == {"stored": []}
    assert event.after == {"set": ["initial_access_token"]}
    assert SECRET not in _events_text()


def test_replacing_and_clearing_name_what_changed(rfc_idp):
    actor = Actor.system("test")
    idp_secrets_set(idp=rfc_idp, actor=actor, values={"initial_access_token": "first-value", "admin_token": "adm1n"})
    assert idp_secrets_set(idp=rfc_idp, actor=actor, values={"initial_access_token": "first-value"}) == []
    assert idp_secrets_set(idp=rfc_idp, actor=actor, values={"initial_access_token": "second"}, clear=["admin_token"])
    assert IdPConnection.objects.get(pk=rfc_idp.pk).secrets == {"initial_access_token": "second"}
    last = AuditEvent.objects.filter(action="idp.secrets_set").order_by("-id").first()
    assert last.before == {"stored": ["admin_token", "initial_access_token"]}
    assert last.after == {"set": ["initial_access_token"], "cleared": ["admin_token"]}
    assert AuditEvent.objects.filter(action="idp.secrets_set").count() == 2  # the no-op recorded nothing
    assert "first-value" not in _events_text() and "second" not in _events_text()


def test_unknown_names_and_empty_values_are_refused_and_change_nothing(rfc_idp):
    with pytest.raises(IdPSecretError, match="no credential named admin_client_secret"):
        idp_secrets_set(idp=rfc_idp, actor=Actor.system("t"), values={"admin_client_secret": "x" * 10})
    with pytest.raises(IdPSecretError, match="empty value"):
        idp_secrets_set(idp=rfc_idp, actor=Actor.system("t"), values={"initial_access_token": "  "})
    assert IdPConnection.objects.get(pk=rfc_idp.pk).secrets == {}
    assert not AuditEvent.objects.filter(action="idp.secrets_set").exists()


# --- test connection against the real test IdP -------------------------------------------------------------


def _idp_client_count(oidc_idp) -> int:
    answer = httpx.get(oidc_idp.console_clients_endpoint, headers={"Authorization": f"Bearer {oidc_idp.admin_token}"})
    return answer.json()["total"]


def test_connection_test_with_the_right_credentials_proves_each_and_registers_nothing(rfc_idp, oidc_idp):
    _config, secrets = oidc_idp.connector_config()
    idp_secrets_set(idp=rfc_idp, actor=Actor.system("t"), values=secrets)
    before = _idp_client_count(oidc_idp)

    result = idp_connection_test(idp=IdPConnection.objects.get(pk=rfc_idp.pk), actor=Actor.system("t"))

    assert result.ok, result.error
    assert result.steps[0] == f"reachable: {oidc_idp.issuer}"
    assert any(step.startswith("initial_access_token: accepted") for step in result.steps)
    assert "admin_token: the IdP's client listing answered" in result.steps
    assert _idp_client_count(oidc_idp) == before
    (event,) = AuditEvent.objects.filter(action="idp.connection_test")
    assert event.after["ok"] is True


def test_a_wrong_token_fails_the_test_and_the_report_does_not_leak_it(rfc_idp, oidc_idp):
    wrong = "wrong-initial-access-token-0f9e8d"
    idp_secrets_set(idp=rfc_idp, actor=Actor.system("t"), values={"initial_access_token": wrong})

    result = idp_connection_test(idp=IdPConnection.objects.get(pk=rfc_idp.pk), actor=Actor.system("t"))

    assert not result.ok
    assert "refused the initial access token (401)" in result.error
    assert wrong not in result.summary()
    assert wrong not in _events_text()


def test_an_unreachable_idp_fails_at_the_first_step(db):
    idp = IdPFactory(
        name="gone",
        kind=IdPKind.RFC7591,
        config={
            "issuer": "http://127.0.0.1:9",
            "registration_endpoint": "http://127.0.0.1:9/reg",
            "token_endpoint": "x",
        },
        secrets={"initial_access_token": "whatever-token"},
    )
    result = idp_connection_test(idp=idp, actor=Actor.system("t"), timeout=2)
    assert not result.ok and result.steps == []
    assert "ConnectError" in result.error


# --- Django admin ------------------------------------------------------------------------------------------


def test_the_admin_form_is_write_only_and_saves_through_the_service(staff_client, rfc_idp):
    idp_secrets_set(idp=rfc_idp, actor=Actor.system("t"), values={"initial_access_token": SECRET})
    change = staff_client.get(reverse("admin:inventory_idpconnection_change", args=[rfc_idp.pk]))
    url = reverse("admin:inventory_idpconnection_secrets", args=[rfc_idp.pk])
    assert url in change.content.decode() and SECRET not in change.content.decode()

    page = staff_client.get(url).content.decode()
    assert 'type="password"' in page and 'name="initial_access_token"' in page and 'name="admin_token"' in page
    assert "currently set" in page and "currently not set" in page
    assert SECRET not in page

    answer = staff_client.post(url, {"initial_access_token": "", "admin_token": "new-admin-token-123"})
    assert answer.status_code == 302
    stored = IdPConnection.objects.get(pk=rfc_idp.pk).secrets
    assert stored == {"initial_access_token": SECRET, "admin_token": "new-admin-token-123"}  # blank kept
    event = AuditEvent.objects.filter(action="idp.secrets_set").order_by("-id").first()
    assert event.actor_label == "root-admin" and event.after == {"set": ["admin_token"]}
    assert "new-admin-token-123" not in _events_text()


def test_the_admin_clears_a_credential(staff_client, rfc_idp):
    idp_secrets_set(
        idp=rfc_idp, actor=Actor.system("t"), values={"initial_access_token": "a-token", "admin_token": "b"}
    )
    url = reverse("admin:inventory_idpconnection_secrets", args=[rfc_idp.pk])
    staff_client.post(url, {"clear__admin_token": "on"})
    assert IdPConnection.objects.get(pk=rfc_idp.pk).secrets == {"initial_access_token": "a-token"}


def test_the_admin_test_button_reports_in_messages(staff_client, rfc_idp, oidc_idp):
    _config, secrets = oidc_idp.connector_config()
    idp_secrets_set(idp=rfc_idp, actor=Actor.system("t"), values=secrets)
    url = reverse("admin:inventory_idpconnection_test_connection", args=[rfc_idp.pk])
    assert staff_client.get(url).status_code == 405  # a call to the IdP is never a GET
    page = staff_client.post(url, follow=True).content.decode()
    assert "Oidc-test: connection works — reachable" in page
    assert oidc_idp.initial_access_token not in page and oidc_idp.admin_token not in page


def test_the_admin_action_tests_each_selected_connection(staff_client, rfc_idp, oidc_idp):
    url = reverse("admin:inventory_idpconnection_changelist")
    page = staff_client.post(
        url, {"action": "test_connections", "_selected_action": [rfc_idp.pk]}, follow=True
    ).content.decode()
    assert "Oidc-test: connection test failed" in page and "missing initial_access_token" in page


def test_people_without_change_permission_get_no_form(client, rfc_idp, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    client.force_login(viewer)
    assert client.get(reverse("admin:inventory_idpconnection_secrets", args=[rfc_idp.pk])).status_code == 403


# --- manage.py set_idp_secret ------------------------------------------------------------------------------


class _Stdin(io.StringIO):
    def isatty(self):
        return False


def test_the_command_reads_stdin_and_prints_no_value(rfc_idp, monkeypatch):
    monkeypatch.setattr("sys.stdin", _Stdin(SECRET + "\n"))
    out = io.StringIO()
    call_command("set_idp_secret", "oidc-test", "initial_access_token", stdout=out)
    assert out.getvalue() == "oidc-test: initial_access_token set\n"
    assert IdPConnection.objects.get(pk=rfc_idp.pk).secrets == {"initial_access_token": SECRET}
    (event,) = AuditEvent.objects.filter(action="idp.secrets_set")
    assert event.actor_label == "manage.py set_idp_secret"


def test_the_command_reads_a_file_lists_and_tests(rfc_idp, oidc_idp, tmp_path):
    path = tmp_path / "iat"
    path.write_text(oidc_idp.initial_access_token + "\n")
    out = io.StringIO()
    call_command("set_idp_secret", "oidc-test", "initial_access_token", "--file", str(path), "--test", stdout=out)
    assert "ok: initial_access_token: accepted" in out.getvalue()
    assert oidc_idp.initial_access_token not in out.getvalue()
    out = io.StringIO()
    call_command("set_idp_secret", "oidc-test", "--list", stdout=out)
    assert out.getvalue() == "initial_access_token: set\nadmin_token: not set\n"


def test_the_command_takes_no_value_from_argv_or_a_terminal(rfc_idp, monkeypatch):
    with pytest.raises(CommandError):
        call_command("set_idp_secret", "oidc-test", "initial_access_token", SECRET)
    tty = _Stdin("")
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", tty)
    with pytest.raises(CommandError, match="never taken from argv"):
        call_command("set_idp_secret", "oidc-test", "initial_access_token")
    with pytest.raises(CommandError, match="no IdP connection named 'nope'"):
        call_command("set_idp_secret", "nope", "--list")
    assert IdPConnection.objects.get(pk=rfc_idp.pk).secrets == {}
