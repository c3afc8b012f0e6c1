"""Context conditions on registration (RFC 7591) and on RFC 7592 calls: allowed source networks.

An initial access token or a trusted issuer may carry ``allowed_networks``, a list of CIDR blocks (IPv4 or IPv6;
empty = from anywhere). A registration with that token or with a software statement of that issuer — and every
later RFC 7592 call on a registration it created — is accepted only from an address inside one of them.

**Which address.** The client's *real* address, derived the one way Registrar derives it everywhere
(``portal.loginthrottle.client_address``, allauth's adapter, ``portal.settings``): with
``REGISTRAR_TRUSTED_PROXY_COUNT = N`` the N-th ``X-Forwarded-For`` entry from the right (what the outermost trusted
proxy appended), or the header named by ``REGISTRAR_TRUSTED_CLIENT_IP_HEADER``; with neither configured, the TCP
peer (``REMOTE_ADDR``), and ``X-Forwarded-For`` is ignored — any client can write it, so a spoofed header opens
nothing. A request with fewer forwarded entries than trusted proxies did not come through them: its peer counts.

**Refusals** are RFC 7591 error bodies naming the condition, the credential and the address, answered before
anything is written (no request, no token use, no audit event): ``403 {"error": "access_denied"}`` for a token,
``403 {"error": "unapproved_software_statement"}`` for an issuer's statement. Called from
``approvals.oauth2.views`` (one call in ``_register``, one in ``manage``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError

from approvals.oauth2.errors import IntakeError
from portal.logs import log_event

logger = logging.getLogger(__name__)

CONDITION = "allowed_networks"
MAX_NETWORKS = 100
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConditionRefused(IntakeError):
    """403: the credential is valid, but a context condition on it does not hold for this request."""

    status = 403


def validate_networks(value: Any) -> None:
    """Model field validator: a list of at most 100 CIDR blocks without host bits (``10.1.0.0/16``, not
    ``10.1.2.3/16``, which would mean something else than it says). The first bad entry is named."""
    if value in (None, ""):
        return
    if not isinstance(value, list):
        raise ValidationError('allowed networks must be a list of CIDR blocks, e.g. ["10.0.0.0/8"]')
    if len(value) > MAX_NETWORKS:
        raise ValidationError(f"at most {MAX_NETWORKS} allowed networks, got {len(value)}")
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise ValidationError(f"allowed network #{index + 1} is not a string: {entry!r}")
        try:
            ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            raise ValidationError(f"allowed network #{index + 1} {entry!r} is not a CIDR block: {exc}") from None


def parse_networks(value: Iterable[str] | None) -> list[Network]:
    return [ipaddress.ip_network(str(entry).strip(), strict=False) for entry in value or ()]


def source_address(request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's real address behind the configured trusted proxies (see the module docstring)."""
    from portal.loginthrottle import client_address

    try:
        text = client_address(request)
    except PermissionDenied:
        return None
    try:
        return ipaddress.ip_address(str(text).split("%", 1)[0].strip())
    except ValueError:
        return None


def _allowed(address, networks: list[Network]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def _check(request, *, networks_raw, credential: str, error: str) -> None:
    """Raise ConditionRefused unless the request's real address is inside one of ``networks_raw`` (empty: any)."""
    networks = parse_networks(networks_raw)
    if not networks:
        return
    address = source_address(request)
    if _allowed(address, networks):
        return
    listed = ", ".join(str(n) for n in networks)
    seen = str(address) if address is not None else "an unknown address"
    log_event(logger, "condition_refused", condition=CONDITION, on=credential.split(" ", 1)[-1], source=seen)
    raise ConditionRefused(
        error,
        f"condition {CONDITION} of {credential}: requests must come from {listed}; this one came from {seen}",
    )


def requester_check(request, requester) -> None:
    """Registration (RFC 7591): the authenticated token's or statement issuer's networks; raises ConditionRefused."""
    if requester.token is not None:
        token = requester.token
        _check(
            request,
            networks_raw=token.allowed_networks,
            credential=f"initial access token {token.prefix}",
            error="access_denied",
        )
    issuer = requester.issuer
    if issuer is not None:
        _check(
            request,
            networks_raw=issuer.allowed_networks,
            credential=f"trusted issuer {issuer.name!r}",
            error="unapproved_software_statement",
        )


def registration_call_check(request, registration_id: str, bearer: str | None) -> None:
    """RFC 7592 GET/PUT/DELETE: the networks of the token or issuer that created the registration. Only for a
    caller holding that registration's access token — anyone else gets the usual 401 from the call itself and
    learns nothing about conditions."""
    if not bearer:
        return
    from approvals.models import RegistrationRequest
    from portal.crypto import hash_token

    reg_request = (
        RegistrationRequest.objects.filter(public_id=registration_id, registration_access_token_hash=hash_token(bearer))
        .select_related("token", "issuer")
        .only("pk", "token__prefix", "token__allowed_networks", "issuer__name", "issuer__allowed_networks")
        .first()
    )
    if reg_request is None:
        return
    if reg_request.token is not None:
        _check(
            request,
            networks_raw=reg_request.token.allowed_networks,
            credential=f"initial access token {reg_request.token.prefix}",
            error="access_denied",
        )
    if reg_request.issuer is not None:
        _check(
            request,
            networks_raw=reg_request.issuer.allowed_networks,
            credential=f"trusted issuer {reg_request.issuer.name!r}",
            error="unapproved_software_statement",
        )


__all__ = [
    "CONDITION",
    "ConditionRefused",
    "parse_networks",
    "registration_call_check",
    "requester_check",
    "source_address",
    "validate_networks",
]
