"""``/oauth2/register`` (RFC 7591) and ``/oauth2/register/<registration id>`` (RFC 7592).

HTTP only: the services are ``register.registration_submit`` (after ``credentials.requester_authenticate``) and
``client_config``'s read, update and delete; ``responses`` builds the success bodies.

Plain Django views, JSON in and out, CSRF-exempt because they are authenticated by a bearer credential
(never a cookie). Every error body is ``{"error": ..., "error_description": ...}`` (RFC 7591 §3.2.2 /
RFC 6750 §3); a 401 also carries ``WWW-Authenticate: Bearer error="invalid_token"``.

Order of checks on POST: rate limits per source address and per bearer credential (one Redis round trip)
→ body size (413) → JSON (400) → credential (401) → for an anonymous registration, rate limits per software
identity and per profile (429) → metadata and policy (400/201/202). The cheap checks
come first so a flood costs a cache round trip, not a database transaction.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import get_script_prefix, reverse
from django.views.decorators.csrf import csrf_exempt

from approvals import conditions, ratelimit
from approvals.metrics import registration_counted
from approvals.oauth2 import anonymous, cache, client_config, credentials, responses
from approvals.oauth2.anonymous import AnonymousRefusal
from approvals.oauth2.errors import ERR_INVALID_METADATA, IntakeError, Unauthorized
from approvals.oauth2.inline_delivery import deliver_inline
from approvals.oauth2.register import registration_submit
from inventory.choices import ClientState
from portal import jsonbody

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status, json_dumps_params={"separators": (",", ":")})
    for key, value in {**NO_STORE, **(headers or {})}.items():
        response[key] = value
    return response


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JsonResponse:
    return _json(status, {"error": error, "error_description": description}, headers)


def _from_exc(exc: IntakeError) -> JsonResponse:
    headers = None
    if exc.status == 401:
        headers = {
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{_header_safe(exc.description)}"'
        }
    return _error(exc.status, exc.error, exc.description, headers)


def _header_safe(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:200]


def _bearer(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _source_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is set by whoever sends the request. Behind a proxy, have the
    # proxy (or gunicorn's --forwarded-allow-ips) set REMOTE_ADDR.
    return request.META.get("REMOTE_ADDR") or None


def _limited(limit: ratelimit.Limited) -> JsonResponse:
    return _error(
        429,
        "too_many_requests",
        f"rate limit per {limit.scope} exceeded; retry after {limit.retry_after} s",
        {"Retry-After": str(limit.retry_after)},
    )


def _rate_limits(source_ip: str | None, bearer: str | None) -> ratelimit.Limited | None:
    """Count the request per source address and, when it carries one, per bearer credential (one round trip)."""
    limits = [("address", source_ip or "unknown", settings.REGISTRAR_REGISTER_RATE_PER_IP)]
    if bearer:
        limits.append(("token", bearer, settings.REGISTRAR_REGISTER_RATE_PER_TOKEN))
    return ratelimit.check(*limits)


def _anonymous_limits(profile, body: Any) -> ratelimit.Limited | None:
    """An anonymous registration is also counted per software identity and for its whole profile, so one busy
    hosted client behind a shared egress address neither locks out the others nor fills the IdP."""
    ident = f"{profile.pk}:{anonymous.body_identity(body)}"
    return ratelimit.check(
        ("software", ident, profile.rate_per_software), ("profile", str(profile.pk), profile.rate_per_profile)
    )


def _read_json(request: HttpRequest) -> tuple[Any, JsonResponse | None]:
    """The parsed body, or the error response (413 too large, 400 not JSON)."""
    limit = settings.REGISTRAR_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None, _error(413, ERR_INVALID_METADATA, f"the request body is larger than {limit} bytes")
    raw = request.body
    if len(raw) > limit:
        return None, _error(413, ERR_INVALID_METADATA, f"the request body is larger than {limit} bytes")
    content_type = request.content_type or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        return None, _error(400, ERR_INVALID_METADATA, "the request body must be JSON (Content-Type: application/json)")
    try:
        body = jsonbody.loads(raw)
    except ValueError as exc:
        return None, _error(400, ERR_INVALID_METADATA, f"the request body is not valid JSON: {exc}")
    return body, None


_ID_SLOT = "registration-id-slot"


@functools.lru_cache(maxsize=16)
def _manage_path(script_prefix: str) -> tuple[str, str]:
    """The RFC 7592 URL path around its registration id, reversed once per script prefix (reverse() is ~30 µs
    of CPU, on every registration). Registration ids are ``reg_`` + URL-safe base64: nothing reverse() would quote."""
    head, _, tail = reverse("approvals:oauth2-manage", kwargs={"registration_id": _ID_SLOT}).partition(_ID_SLOT)
    return head, tail


def _client_uri(request: HttpRequest, registration_id: str) -> str:
    head, tail = _manage_path(get_script_prefix())
    path = f"{head}{registration_id}{tail}"
    base = settings.REGISTRAR_PUBLIC_URL
    return f"{base}{path}" if base else request.build_absolute_uri(path)


def _unauthorized(request: HttpRequest, exc: IntakeError, bearer: str | None) -> JsonResponse:
    credentials.registration_unauthorized_record(
        description=exc.description, bearer=bearer, source_ip=_source_ip(request), path=request.path
    )
    return _from_exc(exc)


# Outcome label of registrar_registrations_total by status code; 202 and 400 are told apart by the view.
_OUTCOMES = {
    201: "created",
    202: "pending",
    400: "invalid",
    401: "unauthorized",
    405: "invalid",
    413: "invalid",
    429: "rate_limited",
}


def _refusal_status(error: str) -> int:
    """403 for a context condition the policy refused on (a tier's allowed networks), 400 for the rest."""
    return 403 if error == "access_denied" else 400


@dataclass
class _Labels:
    """The labels of registrar_registrations_total for one call, filled in by ``_register`` as it learns them;
    an empty outcome is read from the status code."""

    channel: str = ""
    outcome: str = ""


@csrf_exempt
def register(request: HttpRequest, idp_name: str | None = None) -> HttpResponse:
    """RFC 7591 §3.1 client registration, counted by channel and outcome (``approvals.metrics``). At
    ``/oauth2/idp/<idp_name>/register`` an anonymous registration is judged under that IdP connection's profile."""
    labels = _Labels()
    try:
        response = _register(request, labels, idp_name)
    except Exception:
        registration_counted(channel=labels.channel, outcome="error")
        raise
    outcome = labels.outcome or _OUTCOMES.get(response.status_code, "error")
    registration_counted(channel=labels.channel, outcome=outcome)
    return response


def _register(request: HttpRequest, labels: _Labels, idp_name: str | None) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "invalid_request", "use POST to register a client")
        response["Allow"] = "POST"
        return response
    target_idp = None
    if idp_name is not None:
        target_idp = cache.idp_named(idp_name)
        if target_idp is None:
            return _error(404, "invalid_request", f"no enabled IdP connection named {_header_safe(idp_name)[:64]!r}")
    source_ip = _source_ip(request)
    bearer = _bearer(request)
    limited = _rate_limits(source_ip, bearer)
    if limited:
        return _limited(limited)
    body, problem = _read_json(request)
    if problem is not None:
        return problem
    try:
        requester = credentials.requester_authenticate(bearer=bearer, body=body, idp=target_idp)
    except Unauthorized as exc:
        return _unauthorized(request, exc, bearer)
    except IntakeError as exc:  # a software statement that does not verify
        credentials.registration_unauthorized_record(
            description=exc.description, bearer=None, source_ip=source_ip, path=request.path, error=exc.error
        )
        return _from_exc(exc)
    labels.channel = requester.via
    try:  # context conditions (allowed source networks): approvals.conditions
        conditions.requester_check(request, requester)
    except IntakeError as exc:
        labels.outcome = "refused"
        return _from_exc(exc)
    if requester.profile is not None:
        limited = _anonymous_limits(requester.profile, body)
        if limited:
            return _limited(limited)
    if requester.statement is not None:
        # A statement is its own credential: limit per workload (issuer rule + subject), like a token.
        ident = f"statement:{requester.statement.issuer.pk}:{requester.statement.subject}"
        limited = ratelimit.check(("token", ident, settings.REGISTRAR_REGISTER_RATE_PER_TOKEN))
        if limited:
            return _limited(limited)
    # The policy judges the tier's allowed networks (approvals.policy) on the same real address as above.
    address = conditions.source_address(request)
    requester = dataclasses.replace(
        requester, policy_inputs={**requester.policy_inputs, "source_address": str(address) if address else ""}
    )
    try:
        submission = registration_submit(requester=requester, body=body, source_ip=source_ip)
    except Unauthorized as exc:
        return _unauthorized(request, exc, bearer)
    except AnonymousRefusal as exc:
        # Anyone can send one: counted per source and minute, never a request row of its own.
        labels.outcome = "refused"
        credentials.registration_unauthorized_record(
            description=exc.description,
            bearer=None,
            source_ip=source_ip,
            path=request.path,
            error=exc.error,
            anonymous=True,
        )
        return _error(_refusal_status(exc.error), exc.error, exc.description)
    except IntakeError as exc:
        if requester.statement is not None and exc.error == "invalid_software_statement":
            # its jti was used by a concurrent registration: recorded like any rejected statement
            credentials.registration_unauthorized_record(
                description=exc.description, bearer=None, source_ip=source_ip, path=request.path, error=exc.error
            )
        return _from_exc(exc)

    if submission.refused:
        labels.outcome = "refused"
        assert submission.error is not None and submission.error_description is not None  # set on every refusal
        return _error(_refusal_status(submission.error), submission.error, submission.error_description)
    reg_request = submission.reg_request
    token = submission.registration_access_token
    assert token is not None  # set on every registration that was not refused
    uri = _client_uri(request, reg_request.public_id)
    if submission.coalesced:
        labels.outcome = "coalesced"
    client = submission.client
    if client is not None and (client.state == ClientState.ACTIVE if submission.coalesced else deliver_inline(client)):
        body = responses.client_information(
            reg_request=reg_request,
            client=client,
            registration_access_token=token,
            registration_client_uri=uri,
        )
        response = _json(201, body)
        response["Location"] = uri
        return response
    status = "pending" if submission.client is None else "provisioning"
    labels.outcome = status
    response = _json(
        202,
        responses.pending_information(
            reg_request=reg_request,
            registration_access_token=token,
            registration_client_uri=uri,
            status=status,
        ),
    )
    response["Location"] = uri
    return response


@csrf_exempt
def manage(request: HttpRequest, registration_id: str) -> HttpResponse:
    """RFC 7592: read (GET), narrow (PUT) or delete (DELETE) one registration."""
    if request.method not in ("GET", "PUT", "DELETE"):
        response = _error(405, "invalid_request", "use GET, PUT or DELETE on a registration")
        response["Allow"] = "GET, PUT, DELETE"
        return response
    bearer = _bearer(request)
    limited = _rate_limits(_source_ip(request), bearer)
    if limited:
        return _limited(limited)
    try:
        conditions.registration_call_check(request, registration_id, bearer)  # approvals.conditions
        if request.method == "DELETE":
            client_config.registration_delete(registration_id=registration_id, bearer=bearer)
            return HttpResponse(status=204, headers=NO_STORE)
        if request.method == "GET":
            result = client_config.registration_read(registration_id=registration_id, bearer=bearer)
        else:
            # Authenticate before reading the body, so an anonymous caller learns nothing from parse errors.
            body, problem = _read_json(request)
            if problem is not None:
                client_config.registration_authenticate(registration_id, bearer)
                return problem
            result = client_config.registration_update(registration_id=registration_id, bearer=bearer, body=body)
    except Unauthorized as exc:
        return _unauthorized(request, exc, bearer)
    except IntakeError as exc:
        return _from_exc(exc)

    uri = _client_uri(request, registration_id)
    if result.status == 200:
        assert result.client is not None  # 200 answers only for a client
        return _json(
            200,
            responses.client_information(
                reg_request=result.reg_request,
                client=result.client,
                registration_access_token=result.registration_access_token,
                registration_client_uri=uri,
            ),
        )
    status = "pending" if result.client is None else "provisioning"
    return _json(
        202,
        responses.pending_information(
            reg_request=result.reg_request,
            registration_access_token=result.registration_access_token,
            registration_client_uri=uri,
            status=status,
        ),
    )
