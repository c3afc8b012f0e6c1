"""Invariant: Django admin is audited and cannot erase.

Matrix: each security-relevant model × create / change / delete, driven through the real admin pages as a
superuser, either writes exactly one audit event with the right action and before/after (secrets as
"********") or is not offered at all (403, and no "delete selected" action). Plus: every admin on the
site is audited, lifecycle fields are read-only, and the inlines take no writes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from approvals.models import Decision, InitialAccessToken, Policy, RegistrationRequest, TrustedIssuer
from inventory.choices import ClientState, OutboxOperation
from inventory.models import Client, IdPConnection, OutboxEntry, ScopeDefinition, Team
from portal.audit import Actor, audit_record
from portal.auditedadmin import AuditedAdminMixin
from portal.censor import CENSORED
from portal.models import ApiToken, AuditEvent, User
from tests.factories import ClientFactory, IdPFactory, RequestFactory, ScopeFactory, TokenFactory, UserFactory

pytestmark = pytest.mark.django_db


# --- driving the admin like a person ---------------------------------------------------------------------


class _FormFields(HTMLParser):
    """The submittable fields of the admin's main form (``<form id="..._form">``), as a browser sends them."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, list[str]] = {}
        self._in_form = False
        self._select: tuple[str, bool] | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._in_form = (a.get("id") or "").endswith("_form")
        if not self._in_form or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file", "image"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.setdefault(name, []).append(a.get("value", "on"))
            else:
                self.fields.setdefault(name, []).append(a.get("value", ""))
        elif tag == "select" and name:
            self._select = (name, "multiple" in a)
            self._first_option = None
            self.fields.setdefault(name, [])
        elif tag == "option" and self._select:
            if self._first_option is None:
                self._first_option = a.get("value", "")
            if "selected" in a:
                self.fields[self._select[0]].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = [""]

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "select" and self._select:
            name, multiple = self._select
            if not self.fields[name]:
                if multiple:  # nothing chosen: a browser sends nothing
                    del self.fields[name]
                elif self._first_option is not None:  # a browser sends the first option
                    self.fields[name].append(self._first_option)
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea][0] += data


def form_data(client, url: str) -> dict:
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    parser = _FormFields()
    parser.feed(page.content.decode())
    data = {k: (v if len(v) > 1 else (v[0] if v else "")) for k, v in parser.fields.items()}
    for name, value in list(data.items()):  # a textarea's first newline is markup, not content
        if isinstance(value, str) and value.startswith("\n"):
            data[name] = value[1:]
    return data


def url(model, view: str, *args) -> str:
    return (
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/{view}/"
        if not args
        else (f"/admin/{model._meta.app_label}/{model._meta.model_name}/{args[0]}/{view}/")
    )


def save(client, address: str, data: dict):
    response = client.post(address, data | {"_save": "Save"})
    assert response.status_code == 302, _errors(response)
    return response


def _errors(response) -> str:
    context = getattr(response, "context", None) or {}
    errors = context.get("errors") if hasattr(context, "get") else None
    return f"{response.status_code}: {errors or response.content[:2000]!r}"


def new_events():
    return list(AuditEvent.objects.order_by("id"))


@pytest.fixture
def staff(client, admin_user):
    client.force_login(admin_user)
    return admin_user


@pytest.fixture
def mark():
    """Events after this point are the test's."""
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    return lambda: list(AuditEvent.objects.filter(id__gt=last).order_by("id"))


def only_event(events, action: str) -> AuditEvent:
    assert [e.action for e in events] == [action], [e.action for e in events]
    return events[0]


# --- every admin is audited --------------------------------------------------------------------------------


def test_every_admin_on_the_site_is_audited_and_its_inlines_take_no_writes(rf, admin_user):
    request = rf.get("/admin/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, AuditedAdminMixin), model._meta.label
        for inline in model_admin.get_inline_instances(request):
            assert not (
                inline.has_add_permission(request, None)
                or inline.has_change_permission(request)
                or inline.has_delete_permission(request)
            ), (model._meta.label, type(inline).__name__)


# --- not offered: deleting what explains history, creating what must be minted -----------------------------

NEVER_DELETED = [
    User,
    ApiToken,
    AuditEvent,
    Group,
    InitialAccessToken,
    Policy,
    RegistrationRequest,
    Client,
    Team,
    OutboxEntry,
]
NEVER_ADDED = [ApiToken, AuditEvent, InitialAccessToken, RegistrationRequest, Client, OutboxEntry]
NEVER_CHANGED = [AuditEvent, RegistrationRequest, OutboxEntry]


@pytest.fixture
def one_of_each(db, admin_user, idp, owner):
    token = TokenFactory(owner=owner)
    client_row = ClientFactory(owner=owner, idp=idp)
    request_row = RequestFactory(owner=owner, token=token)
    Decision.objects.create(request=request_row, approver=admin_user, kind="approve", reason="ok")
    api_token = ApiToken.objects.create(user=owner, name="ci", prefix="rapi_abc", token_hash="h" * 64)
    outbox = OutboxEntry.objects.create(
        client=client_row, idp=idp, operation=OutboxOperation.DISABLE, next_attempt_at=timezone.now()
    )
    event = audit_record(actor=Actor.system("t"), action="t.seed", object_type="t", object_id=1)
    team = Team.objects.create(name="Red", slug="red")
    return {
        User: owner,
        ApiToken: api_token,
        AuditEvent: event,
        Group: Group.objects.get(name="approver"),
        InitialAccessToken: token,
        Policy: Policy.objects.get(is_active=True),
        RegistrationRequest: request_row,
        Client: client_row,
        Team: team,
        OutboxEntry: outbox,
    }


@pytest.mark.parametrize("model", NEVER_DELETED, ids=lambda m: m._meta.label)
def test_deleting_is_not_offered(client, staff, one_of_each, mark, model):
    obj = one_of_each[model]
    assert client.get(url(model, "delete", obj.pk)).status_code == 403
    assert client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    changelist = client.get(url(model, "").rstrip("/").rsplit("/", 1)[0] + "/")
    assert changelist.status_code == 200 and b'value="delete_selected"' not in changelist.content
    bulk = client.post(
        url(model, "").rstrip("/").rsplit("/", 1)[0] + "/",
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert model._base_manager.filter(pk=obj.pk).exists()
    assert [e.action for e in mark()] == []


@pytest.mark.parametrize("model", NEVER_ADDED, ids=lambda m: m._meta.label)
def test_adding_is_not_offered(client, staff, mark, model):
    assert client.get(url(model, "add")).status_code == 403
    assert client.post(url(model, "add"), {"name": "x"}).status_code == 403
    assert mark() == []


@pytest.mark.parametrize("model", NEVER_CHANGED, ids=lambda m: m._meta.label)
def test_changing_is_not_offered(client, staff, one_of_each, mark, model):
    obj = one_of_each[model]
    assert client.post(url(model, "change", obj.pk), {"state": "denied", "action": "x"}).status_code == 403
    assert mark() == []


def test_a_decision_cannot_be_added_through_the_request_page(client, staff, one_of_each, mark):
    """Separation of duties lives in the review queue: the admin shows decisions and takes none."""
    request_row = one_of_each[RegistrationRequest]
    approver = UserFactory(username="sneaky", roles=["approver"])
    inline = {
        "decisions-TOTAL_FORMS": "2",
        "decisions-INITIAL_FORMS": "1",
        "decisions-MIN_NUM_FORMS": "0",
        "decisions-MAX_NUM_FORMS": "1000",
        "decisions-1-request": str(request_row.pk),
        "decisions-1-approver": str(approver.pk),
        "decisions-1-kind": "approve",
        "decisions-1-reason": "x",
        "_save": "Save",
    }
    assert client.post(url(RegistrationRequest, "change", request_row.pk), inline).status_code == 403
    assert Decision.objects.filter(request=request_row).count() == 1 and mark() == []


# --- users and roles ----------------------------------------------------------------------------------------


def test_creating_a_user_is_one_event_without_the_password(client, staff, mark):
    save(
        client,
        url(User, "add"),
        {
            "username": "newbie",
            "password1": "Plenty-long-pw-42",
            "password2": "Plenty-long-pw-42",
            "usable_password": "true",
        },
    )
    user = User.objects.get(username="newbie")
    event = only_event(mark(), "user.admin_create")
    assert (event.object_type, event.object_id, event.actor_label) == ("user", str(user.pk), "root-admin")
    assert event.before is None and event.after["username"] == "newbie" and event.after["password"] == CENSORED
    assert user.password[:20] not in json.dumps(event.after)


def test_granting_roles_and_flags_is_one_event_with_before_and_after(client, staff, mark, owner):
    data = form_data(client, url(User, "change", owner.pk))
    data |= {
        "groups": [str(Group.objects.get(name="admin").pk), str(Group.objects.get(name="owner").pk)],
        "is_staff": "on",
        "is_superuser": "on",
        "email": "olivia@corp.example",
    }
    data.pop("is_active", None)  # unticked: deactivated
    save(client, url(User, "change", owner.pk), data)
    event = only_event(mark(), "user.admin_change")
    assert event.before == {
        "groups": ["owner"],
        "is_staff": False,
        "is_superuser": False,
        "is_active": True,
        "email": "olivia@example.com",
    }
    assert event.after == {
        "groups": ["admin", "owner"],
        "is_staff": True,
        "is_superuser": True,
        "is_active": False,
        "email": "olivia@corp.example",
    }
    assert event.reason.startswith("Django admin: changed email, groups, is_active, is_staff, is_superuser")


def test_a_save_that_changes_nothing_writes_nothing(client, staff, mark, owner):
    save(client, url(User, "change", owner.pk), form_data(client, url(User, "change", owner.pk)))
    assert mark() == []


def test_setting_a_password_is_audited_without_any_hash(client, staff, mark, owner):
    old_hash = User.objects.get(pk=owner.pk).password
    response = client.post(
        f"/admin/portal/user/{owner.pk}/password/",
        {"password1": "Another-long-pw-77", "password2": "Another-long-pw-77", "usable_password": "true"},
    )
    assert response.status_code == 302
    event = only_event(mark(), "user.admin_change")
    assert event.before == {"password": CENSORED} and event.after == {"password": CENSORED}
    assert old_hash[:30] not in json.dumps([event.before, event.after])
    assert User.objects.get(pk=owner.pk).password != old_hash


def test_the_leaver_and_deactivation_records_are_read_only(client, staff, mark, owner):
    data = form_data(client, url(User, "change", owner.pk)) | {"deactivation_source": "forged"}
    save(client, url(User, "change", owner.pk), data)
    assert User.objects.get(pk=owner.pk).deactivation_source == "" and mark() == []


def test_deactivating_through_the_action_is_the_services_event_only(client, staff, mark, owner, settings):
    response = client.post("/admin/portal/user/", {"action": "deactivate_users", "_selected_action": [owner.pk]})
    assert response.status_code == 302
    assert [e.action for e in mark()] == ["user.deactivate"]


def test_role_groups_cannot_be_renamed_and_their_permissions_are_audited(client, staff, mark):
    group = Group.objects.get(name="approver")
    permission = Permission.objects.get(codename="view_client")
    data = form_data(client, url(Group, "change", group.pk)) | {"name": "root", "permissions": [str(permission.pk)]}
    save(client, url(Group, "change", group.pk), data)
    assert Group.objects.get(pk=group.pk).name == "approver"
    event = only_event(mark(), "group.admin_change")
    assert event.before == {"permissions": []} and event.after == {"permissions": ["view_client.inventory.client"]}


def test_creating_a_group_is_audited(client, staff, mark):
    save(client, url(Group, "add"), {"name": "auditors"})
    event = only_event(mark(), "group.admin_create")
    assert event.after == {"id": Group.objects.get(name="auditors").pk, "name": "auditors", "permissions": []}


# --- tokens -------------------------------------------------------------------------------------------------


def test_a_token_cannot_be_unrevoked_or_reowned_and_its_changes_are_audited(client, staff, mark, owner):
    """Regression: un-revoking or re-owning an initial access token in the admin left no trace (and worked)."""
    revoked_at = timezone.now() - timedelta(hours=1)
    token = TokenFactory(owner=owner, revoked_at=revoked_at, max_uses=5, allowed_scopes=["tickets:read"])
    other = UserFactory(username="mallory", roles=["owner"])
    data = form_data(client, url(InitialAccessToken, "change", token.pk))
    data |= {
        "owner": str(other.pk),
        "revoked_at_0": "",
        "revoked_at_1": "",
        "max_uses": "50",
        "allowed_scopes": json.dumps(["tickets:read", "repo:write"]),
        "uses": "0",
    }
    save(client, url(InitialAccessToken, "change", token.pk), data)
    token.refresh_from_db()
    assert (token.owner_id, token.revoked_at, token.max_uses) == (owner.pk, revoked_at, 50)
    event = only_event(mark(), "initial_access_token.admin_change")
    assert (event.object_type, event.object_id) == ("initial_access_token", str(token.pk))
    assert event.before == {"max_uses": 5, "allowed_scopes": ["tickets:read"]}
    assert event.after == {"max_uses": 50, "allowed_scopes": ["tickets:read", "repo:write"]}


def test_max_uses_below_the_uses_so_far_is_a_form_error(client, staff, mark, owner):
    token = TokenFactory(owner=owner, max_uses=5, uses=3)
    data = form_data(client, url(InitialAccessToken, "change", token.pk)) | {"max_uses": "2"}
    response = client.post(url(InitialAccessToken, "change", token.pk), data | {"_save": "Save"})
    assert response.status_code == 200 and b"used 3 times already" in response.content
    assert InitialAccessToken.objects.get(pk=token.pk).max_uses == 5 and mark() == []


def test_revoking_tokens_goes_through_the_token_service(client, staff, mark, owner):
    token = TokenFactory(owner=owner)
    response = client.post(
        "/admin/approvals/initialaccesstoken/", {"action": "revoke_tokens", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    assert InitialAccessToken.objects.get(pk=token.pk).revoked_at is not None
    assert [e.action for e in mark()] == ["token.revoke"]


def test_api_tokens_are_never_reowned_or_unrevoked(client, staff, mark, owner):
    other = UserFactory(username="mallory")
    api_token = ApiToken.objects.create(
        user=owner, name="ci", prefix="rapi_abc", token_hash="h" * 64, revoked_at=timezone.now()
    )
    data = form_data(client, url(ApiToken, "change", api_token.pk))
    data |= {"user": str(other.pk), "revoked_at_0": "", "revoked_at_1": "", "name": "ci-renamed"}
    save(client, url(ApiToken, "change", api_token.pk), data)
    api_token.refresh_from_db()
    assert (api_token.user_id, api_token.revoked_at is not None, api_token.name) == (owner.pk, True, "ci-renamed")
    event = only_event(mark(), "api_token.admin_change")
    assert (event.before, event.after) == ({"name": "ci"}, {"name": "ci-renamed"})


def test_revoking_api_tokens_is_the_services_event(client, staff, mark, owner):
    api_token = ApiToken.objects.create(user=owner, name="ci", prefix="rapi_abc", token_hash="h" * 64)
    client.post("/admin/portal/apitoken/", {"action": "revoke_api_tokens", "_selected_action": [api_token.pk]})
    revoked_at = ApiToken.objects.get(pk=api_token.pk).revoked_at
    assert revoked_at is not None
    assert [e.action for e in mark()] == ["api_token.revoke"]
    again = client.post(
        "/admin/portal/apitoken/", {"action": "revoke_api_tokens", "_selected_action": [api_token.pk]}, follow=True
    )
    assert "already revoked" in again.content.decode()
    assert ApiToken.objects.get(pk=api_token.pk).revoked_at == revoked_at
    assert [e.action for e in mark()] == ["api_token.revoke"]


# --- configuration: create / change / delete, each one event --------------------------------------------------


def test_scope_sensitivity_lowered_create_and_delete(client, staff, mark):
    save(
        client,
        url(ScopeDefinition, "add"),
        {
            "name": "vault:read",
            "description": "secrets",
            "sensitivity": "high",
            "category": "production_data",
            "is_active": "on",
        },
    )
    scope = ScopeDefinition.objects.get(name="vault:read")
    created = only_event(mark(), "scope.admin_create")
    assert created.after["sensitivity"] == "high"
    data = form_data(client, url(ScopeDefinition, "change", scope.pk)) | {"sensitivity": "low"}
    save(client, url(ScopeDefinition, "change", scope.pk), data)
    changed = mark()[-1]
    assert (changed.action, changed.before, changed.after) == (
        "scope.admin_change",
        {"sensitivity": "high"},
        {"sensitivity": "low"},
    )
    assert client.post(url(ScopeDefinition, "delete", scope.pk), {"post": "yes"}).status_code == 302
    deleted = mark()[-1]
    assert (deleted.action, deleted.before["name"], deleted.after) == ("scope.admin_delete", "vault:read", None)
    assert [e.action for e in mark()] == ["scope.admin_create", "scope.admin_change", "scope.admin_delete"]


def test_bulk_delete_is_audited_per_object(client, staff, mark):
    scopes = [ScopeFactory(name=f"bulk:{i}") for i in range(3)]
    client.post(
        "/admin/inventory/scopedefinition/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [s.pk for s in scopes]},
    )
    assert not ScopeDefinition.objects.filter(name__startswith="bulk:").exists()
    events = mark()
    assert sorted((e.action, e.object_id) for e in events) == sorted(("scope.admin_delete", str(s.pk)) for s in scopes)


def test_trusted_issuer_create_change_delete(client, staff, mark, owner):
    data = {
        "name": "ci",
        "kind": "oidc",
        "issuer": "https://ci.example",
        "audience": "registrar",
        "jwks": json.dumps({"keys": []}),
        "subject": "repo:*",
        "owner": str(owner.pk),
        "purpose": "CI agents",
        "allowed_scopes": json.dumps(["tickets:read"]),
        "max_ttl_seconds": "3600",
        "internal_only": "on",
        "enabled": "on",
    }
    save(client, url(TrustedIssuer, "add"), data)
    issuer = TrustedIssuer.objects.get(name="ci")
    assert only_event(mark(), "trusted_issuer.admin_create").after["subject"] == "repo:*"
    save(
        client,
        url(TrustedIssuer, "change", issuer.pk),
        form_data(client, url(TrustedIssuer, "change", issuer.pk))
        | {"allowed_scopes": json.dumps(["tickets:read", "db:prod:read"])},
    )
    assert (mark()[-1].action, mark()[-1].after) == (
        "trusted_issuer.admin_change",
        {"allowed_scopes": ["tickets:read", "db:prod:read"]},
    )
    assert client.post(url(TrustedIssuer, "delete", issuer.pk), {"post": "yes"}).status_code == 302
    assert [e.action for e in mark()] == [
        "trusted_issuer.admin_create",
        "trusted_issuer.admin_change",
        "trusted_issuer.admin_delete",
    ]


def test_idp_connection_changes_are_audited_and_credentials_never_shown(client, staff, mark):
    idp = IdPFactory(
        name="kc",
        kind="keycloak",
        config={"base_url": "https://kc.example", "realm": "a"},
        secrets={"admin_client_id": "reg", "admin_client_secret": "kc-secret-value-123"},
    )
    page = client.get(url(IdPConnection, "change", idp.pk))
    assert b"kc-secret-value-123" not in page.content
    data = form_data(client, url(IdPConnection, "change", idp.pk))
    data |= {"config": json.dumps({"base_url": "https://evil.example", "realm": "a"})}
    save(client, url(IdPConnection, "change", idp.pk), data)
    event = only_event(mark(), "idp.admin_change")
    assert event.before == {"config": {"base_url": "https://kc.example", "realm": "a"}}
    assert event.after == {"config": {"base_url": "https://evil.example", "realm": "a"}}
    assert IdPConnection.objects.get(pk=idp.pk).secrets["admin_client_secret"] == "kc-secret-value-123"
    assert client.post(url(IdPConnection, "delete", idp.pk), {"post": "yes"}).status_code == 302
    deleted = mark()[-1]
    assert deleted.action == "idp.admin_delete" and deleted.before["secrets"] == CENSORED
    assert "kc-secret-value-123" not in json.dumps(deleted.before)


def test_creating_an_idp_connection_is_audited(client, staff, mark):
    save(
        client,
        url(IdPConnection, "add"),
        {
            "name": "new-idp",
            "kind": "dry-run",
            "config": json.dumps({"issuer": "https://idp.example"}),
            "enabled": "on",
        },
    )
    event = only_event(mark(), "idp.admin_create")
    assert event.after["name"] == "new-idp" and event.after["config"] == {"issuer": "https://idp.example"}
    assert event.after["secrets"] == {}  # none set: shown as empty, never as a value


def test_idp_credentials_changed_elsewhere_in_the_admin_are_recorded_as_changed_only(rf, admin_user, mark):
    """The mixin's own rule, for any audited admin that does expose an encrypted field."""
    idp = IdPFactory(name="kc2", secrets={"admin_client_secret": "old-secret-value"})
    model_admin = admin.site._registry[IdPConnection]
    request = rf.post("/admin/")
    request.user = admin_user
    before = model_admin.audit_snapshot(idp)
    IdPConnection.objects.filter(pk=idp.pk).update(secrets={"admin_client_secret": "new-secret-value"})
    IdPConnection.objects.get(pk=idp.pk).save()
    model_admin.audit_admin_change(
        request, verb="change", pk=idp.pk, before=before, after=model_admin.audit_snapshot(idp)
    )
    event = only_event(mark(), "idp.admin_change")
    assert (event.before, event.after) == ({"secrets": CENSORED}, {"secrets": CENSORED})
    assert "secret-value" not in json.dumps([event.before, event.after]) and "secrets" in event.reason


def test_team_members_are_audited(client, staff, mark, owner):
    team = Team.objects.create(name="Blue", slug="blue")
    data = form_data(client, url(Team, "change", team.pk)) | {"members": [str(owner.pk)], "max_live_clients": "5"}
    save(client, url(Team, "change", team.pk), data)
    event = only_event(mark(), "team.admin_change")
    assert (event.before, event.after) == (
        {"members": [], "max_live_clients": None},
        {"members": ["olivia"], "max_live_clients": 5},
    )
    save(client, url(Team, "add"), {"name": "Green", "slug": "green"})
    assert mark()[-1].action == "team.admin_create"


def test_adding_a_policy_publishes_a_version_through_the_service(client, staff, mark):
    current = Policy.objects.get(is_active=True)
    save(client, url(Policy, "add"), {"thresholds": '{"max_spawn_depth": 2}', "note": "from the add page"})
    assert [e.action for e in mark()] == ["policy.publish"]
    assert Policy.objects.get(is_active=True).version == current.version + 1


def test_policy_saves_publish_a_version_through_the_service(client, staff, mark):
    current = Policy.objects.get(is_active=True)
    data = form_data(client, url(Policy, "change", current.pk))
    save(client, url(Policy, "change", current.pk), data | {"thresholds": '{"max_spawn_depth": 1}', "note": "tighter"})
    assert [e.action for e in mark()] == ["policy.publish"]
    assert Policy.objects.get(is_active=True).version == current.version + 1


# --- clients: lifecycle is not an admin field ---------------------------------------------------------------


def test_client_state_and_owner_are_not_admin_fields(client, staff, mark, owner, idp):
    row = ClientFactory(owner=owner, idp=idp, state=ClientState.SUSPENDED, purpose="nightly reports")
    page = client.get(url(Client, "change", row.pk))
    assert f'href="/inventory/{row.registration_id}/"'.encode() in page.content  # the real page
    data = form_data(client, url(Client, "change", row.pk))
    assert "state" not in data and "owner" not in data
    save(
        client,
        url(Client, "change", row.pk),
        data | {"state": "active", "owner": str(UserFactory().pk), "purpose": "nightly reports v2"},
    )
    row.refresh_from_db()
    assert (row.state, row.owner_id, row.purpose) == (ClientState.SUSPENDED, owner.pk, "nightly reports v2")
    event = only_event(mark(), "client.admin_change")
    assert (event.object_id, event.before, event.after) == (
        str(row.pk),
        {"purpose": "nightly reports"},
        {"purpose": "nightly reports v2"},
    )


# --- what Django and allauth register ---------------------------------------------------------------------


def test_allauth_email_addresses_and_their_actions_are_audited(client, staff, mark, owner):
    from allauth.account.models import EmailAddress

    address = EmailAddress.objects.create(user=owner, email="olivia@example.com", verified=False, primary=True)
    client.post("/admin/account/emailaddress/", {"action": "make_verified", "_selected_action": [address.pk]})
    event = only_event(mark(), "email_address.admin_change")
    assert (event.before, event.after) == ({"verified": False}, {"verified": True})
    assert "make_verified" in event.reason


def test_allauth_social_app_secret_is_recorded_as_changed_only(client, staff, mark):
    from allauth.socialaccount.models import SocialApp

    app = SocialApp.objects.create(provider="openid_connect", name="sso", client_id="cid", secret="first-secret")
    data = form_data(client, url(SocialApp, "change", app.pk)) | {"secret": "second-secret"}
    save(client, url(SocialApp, "change", app.pk), data)
    event = only_event(mark(), "social_app.admin_change")
    assert (event.before, event.after) == ({"secret": CENSORED}, {"secret": CENSORED})
