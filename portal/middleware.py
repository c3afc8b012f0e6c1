"""Request-level plumbing: health probes before the host checks, request ids, the agents' fast path."""

from __future__ import annotations

import ipaddress
import re
import uuid

from django.conf import settings
from django.urls import resolve

from portal import unavailable
from portal.logs import bind_request_id, current_request_id, unbind_request_id

__all__ = ["MachineEndpointMiddleware", "ProbeMiddleware", "RequestIdMiddleware", "current_request_id", "is_probe"]

_VALID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

# Headers a reverse proxy adds when it forwards a request. A request carrying one came through a proxy, so its
# socket peer (the proxy) says nothing about who sent it.
_FORWARDING_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
)


def is_probe(request) -> bool:
    """True when the request comes straight from an address in ``REGISTRAR_PROBE_NETWORKS``.

    ``REMOTE_ADDR`` is the TCP peer as the WSGI server saw it (nothing the client can write), and a request
    that carries a forwarding header is never a probe: behind a proxy on loopback every public request has
    a loopback peer, but the proxy adds ``X-Forwarded-For``, and the sender cannot remove what the proxy adds.
    """
    if any(header in request.META for header in _FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.REGISTRAR_PROBE_NETWORKS)


class ProbeMiddleware:
    """Answers ``GET /healthz``, ``/readyz`` and ``/metrics`` from the probe networks before the host and TLS checks.

    A load balancer, the kubelet or a container health check calls the process by its address (a Host header
    that is not in ``ALLOWED_HOSTS``) over plain HTTP (which ``SECURE_SSL_REDIRECT`` would bounce to HTTPS),
    so through the normal stack every probe would get a 400 or a 301. For these three exact paths, GET or
    HEAD only, from a direct peer in ``REGISTRAR_PROBE_NETWORKS`` (see :func:`is_probe`), this middleware
    calls the view itself. Why that is safe: the host check guards against forged Host headers ending up in
    links, redirects and cached pages, and these views never read the Host header, set no cookies and build
    no URLs; HTTPS guards credentials and cookies in transit, and these answers carry neither (the metrics
    token is only needed from outside the probe networks, which still go through both checks). It must stay
    first in ``MIDDLEWARE`` so it sees the socket peer, before anything that rewrites ``REMOTE_ADDR``.
    """

    paths = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info in self.paths and request.method in ("GET", "HEAD") and is_probe(request):
            match = resolve(request.path_info)
            request.resolver_match = match
            return match.func(request, *match.args, **match.kwargs)
        return self.get_response(request)


class RequestIdMiddleware:
    header = "HTTP_X_REQUEST_ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get(self.header, "")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = bind_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            unbind_request_id(token)
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
        try:
            response = match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            # The view is called here, not by the handler, so no middleware's process_exception sees this:
            # a database outage gets the same 503 as everywhere else (portal.unavailable); the rest propagates.
            response = unavailable.response_for(request, exc)
            if response is None:
                raise
        for header, value in self.headers.items():
            response.headers.setdefault(header, value)
        return response
