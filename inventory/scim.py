"""SCIM 2.0 ``/scim/v2/Users`` for the company directory: the leaver signal (RFC 7643/7644 subset).

Why not django-scim2: it wants its own adapter classes and a user model mixin in ``portal`` and
routes deactivation through model ``save()``; the subset a directory needs for leavers (list/filter,
get, create, replace, patch ``active``, delete) is small enough to implement here directly. Every write
goes through :mod:`inventory.directory`, which acts on ordinary people only.

Auth: ``Authorization: Bearer <REGISTRAR_SCIM_TOKEN>`` (constant-time compare; no token configured →
every call is 401). DELETE deactivates instead of deleting: people own clients and audit history
(``on_delete=PROTECT``), so the record stays with ``active: false``.

Privileged accounts (staff, superusers, approvers, security, admins; :func:`portal.roles.is_privileged`):
PUT, PATCH and DELETE on them are 403, and creating or renaming someone onto one of their user names,
directory ids or e-mails is 409 ``uniqueness``. Reading them stays allowed: a directory matches its people
by ``filter=userName eq`` before it creates them, and a privileged person it could not see would look
missing (and be re-created, then refused). The resource carries no roles, so reading reveals nothing the
directory does not already hold. Roles, groups, ``is_staff``, ``is_superuser`` and passwords are never set
over SCIM: ``groups`` is read-only in RFC 7643 and ignored, ``password``, ``roles`` and ``entitlements``
are refused (400 ``mutability``).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt

from inventory import directory
from portal import jsonbody
from portal.audit import Actor

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
CONTENT_TYPE = "application/scim+json"
MAX_COUNT = 200
ACTOR = Actor.system("scim")
_FILTER = re.compile(r'^\s*(userName|externalId|emails(?:\.value)?)\s+eq\s+"([^"]*)"\s*$', re.IGNORECASE)


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str = ""):
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def _response(data: dict, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, content_type=CONTENT_TYPE)


def _error(exc: ScimError) -> JsonResponse:
    body = {"schemas": [ERROR_SCHEMA], "status": str(exc.status), "detail": exc.detail}
    if exc.scim_type:
        body["scimType"] = exc.scim_type
    response = _response(body, exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="scim"'
    return response


def _authenticate(request) -> None:
    expected = settings.REGISTRAR_SCIM_TOKEN or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not constant_time_compare(token.strip(), expected):
        raise ScimError(401, "a valid bearer token is required")


def _location(request, user) -> str:
    return request.build_absolute_uri(f"/scim/v2/Users/{user.pk}")


def user_resource(request, user) -> dict:
    resource = {
        "schemas": [USER_SCHEMA],
        "id": str(user.pk),
        "userName": user.username,
        "name": {
            "givenName": user.first_name,
            "familyName": user.last_name,
            "formatted": user.get_full_name() or user.username,
        },
        "displayName": user.get_full_name() or user.username,
        "emails": [{"value": user.email, "primary": True, "type": "work"}] if user.email else [],
        "active": user.is_active,
        "meta": {"resourceType": "User", "created": user.date_joined.isoformat(), "location": _location(request, user)},
    }
    if user.external_id:
        resource["externalId"] = user.external_id
    return resource


def _body(request) -> dict:
    try:
        data = jsonbody.loads(request.body or b"{}")
    except ValueError as exc:
        raise ScimError(400, f"the body is not valid JSON: {exc}", "invalidSyntax")
    if not isinstance(data, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    return data


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimError(400, f"active must be a boolean, not {value!r}", "invalidValue")


# Attributes Registrar never takes from a directory (RFC 7643 marks ``groups`` read-only: ignored).
_REFUSED_ATTRIBUTES = ("password", "roles", "entitlements")


def _attributes(data: dict, *, replace: bool) -> tuple[dict, bool | None]:
    """The directory attributes ``data`` sets (all of them when ``replace``), and the wanted ``active``."""
    for name in _REFUSED_ATTRIBUTES:
        if data.get(name):
            raise ScimError(
                400,
                f"{name} cannot be set over SCIM: people sign in through SSO and roles are granted in Registrar",
                "mutability",
            )
    attributes: dict = {}
    if "userName" in data or replace:
        username = data.get("userName")
        if not isinstance(username, str) or not username.strip():
            raise ScimError(400, "userName is required", "invalidValue")
        attributes["username"] = username.strip()[:150]
    if "externalId" in data or replace:
        attributes["external_id"] = data.get("externalId") or None
    full_name = data.get("name")
    if isinstance(full_name, dict):
        attributes["first_name"] = (full_name.get("givenName") or "")[:150]
        attributes["last_name"] = (full_name.get("familyName") or "")[:150]
    elif replace:
        attributes["first_name"] = attributes["last_name"] = ""
    if "emails" in data or replace:
        emails = data.get("emails") or []
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary")), None) or (
            emails[0] if emails and isinstance(emails[0], dict) else {}
        )
        attributes["email"] = (primary.get("value") or "")[:254]
    return attributes, (_as_bool(data["active"]) if "active" in data else None)


def _write(change):
    """Run one directory service call, mapping its refusals onto SCIM errors."""
    try:
        return change()
    except directory.PrivilegedAccount as exc:
        raise ScimError(403, str(exc))
    except directory.Collision as exc:
        raise ScimError(409, str(exc), "uniqueness")
    except directory.InvalidAttributes as exc:
        raise ScimError(400, str(exc), "invalidValue")


def _get_user(pk: str):
    user = get_user_model().objects.filter(pk=int(pk)).first() if pk.isdigit() else None
    if user is None:
        raise ScimError(404, f"user {pk} not found")
    return user


def _list(request):
    users = get_user_model().objects.order_by("pk")
    raw_filter = request.GET.get("filter")
    if raw_filter:
        match = _FILTER.match(raw_filter)
        if not match:
            raise ScimError(400, 'supported filters: userName, externalId or emails eq "…"', "invalidFilter")
        attribute, value = match.group(1).lower(), match.group(2)
        field = {"username": "username", "externalid": "external_id"}.get(attribute, "email")
        users = users.filter(**{f"{field}__iexact" if field != "external_id" else field: value})
    try:
        start = max(1, int(request.GET.get("startIndex", 1)))
        count = min(MAX_COUNT, max(0, int(request.GET.get("count", 100))))
    except ValueError:
        raise ScimError(400, "startIndex and count must be integers", "invalidValue")
    total = users.count()
    page = list(users[start - 1 : start - 1 + count])
    return _response(
        {
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": len(page),
            "Resources": [user_resource(request, u) for u in page],
        }
    )


def _create(request):
    attributes, active = _attributes(_body(request), replace=True)
    user = _write(lambda: directory.directory_user_create(actor=ACTOR, attributes=attributes, active=active))
    return _response(user_resource(request, user), 201)


def _replace(request, user):
    attributes, active = _attributes(_body(request), replace=True)
    user = _write(lambda: directory.directory_user_update(actor=ACTOR, user=user, attributes=attributes, active=active))
    return _response(user_resource(request, user))


def _patch(request, user):
    data = _body(request)
    operations = data.get("Operations")
    if PATCH_SCHEMA not in (data.get("schemas") or []) or not isinstance(operations, list) or not operations:
        raise ScimError(400, "a PatchOp with Operations is required", "invalidSyntax")
    changes: dict = {}
    for op in operations:
        kind = str(op.get("op", "")).lower() if isinstance(op, dict) else ""
        if kind not in ("replace", "add"):
            raise ScimError(400, f"unsupported patch operation {op!r}", "invalidSyntax")
        path_name, value = op.get("path"), op.get("value")
        if path_name:
            if path_name in ("name.givenName", "name.familyName"):
                changes.setdefault("name", {"givenName": user.first_name, "familyName": user.last_name})
                changes["name"][path_name.split(".")[1]] = value
            elif path_name in ("active", "userName", "externalId", "emails"):
                changes[path_name] = value
            else:
                raise ScimError(400, f"unsupported path {path_name!r}", "invalidPath")
        elif isinstance(value, dict):
            changes.update(value)
        else:
            raise ScimError(400, "a patch without a path needs an object value", "invalidValue")
    attributes, active = _attributes(changes, replace=False)
    user = _write(lambda: directory.directory_user_update(actor=ACTOR, user=user, attributes=attributes, active=active))
    return _response(user_resource(request, user))


@csrf_exempt
def users(request, pk: str | None = None):
    try:
        _authenticate(request)
        if pk is None:
            if request.method == "GET":
                return _list(request)
            if request.method == "POST":
                return _create(request)
            raise ScimError(405, f"{request.method} is not allowed on /Users")
        user = _get_user(pk)
        if request.method == "GET":
            return _response(user_resource(request, user))
        if request.method == "PUT":
            return _replace(request, user)
        if request.method == "PATCH":
            return _patch(request, user)
        if request.method == "DELETE":
            _write(lambda: directory.directory_user_deactivate(actor=ACTOR, user=user))
            return HttpResponse(status=204)
        raise ScimError(405, f"{request.method} is not allowed on a User")
    except ScimError as exc:
        return _error(exc)


app_name = "scim"
urlpatterns = [
    path("Users", users, name="users"),
    path("Users/<str:pk>", users, name="user"),
]
