"""Request id propagation: every request gets an id that audit events and logs carry."""

from __future__ import annotations

import contextvars
import re
import uuid

from django.urls import resolve

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_VALID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def current_request_id() -> str:
    return _request_id.get()


class RequestIdMiddleware:
    header = "HTTP_X_REQUEST_ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get(self.header, "")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response


class MachineEndpointMiddleware:
    """The RFC 7591/7592 registration endpoints are answered without the browser middleware listed after this one.

    Agents call ``/oauth2/register`` with a bearer credential and JSON, never with a cookie: sessions, CSRF
    (the views are exempt), authentication, messages, htmx and allauth have nothing to do there, and the
    page's Content-Security-Policy is built for HTML. Measured with instruction counts, that middleware was
    12 % of a registration's CPU, most of it django-csp rebuilding its header on every response. So for these
    paths this middleware resolves the URL and calls the view itself, and gives the JSON the fixed API headers
    (OWASP REST Security cheat sheet): ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``
    and ``X-Frame-Options: DENY``. Whatever sits before it (security headers, request id) still applies, and
    an exception still becomes Django's error response.
    """

    prefixes = ("/oauth2/register",)
    headers = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'", "X-Frame-Options": "DENY"}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(self.prefixes):
            return self.get_response(request)
        match = resolve(request.path_info)  # Resolver404 → Django's 404 response
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        for header, value in self.headers.items():
            response.headers.setdefault(header, value)
        return response
