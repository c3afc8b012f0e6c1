"""Context conditions on registration (RFC 7591) and on RFC 7592 calls: allowed source networks; and the working
window for high-risk human approvals (at the end of this module): on a token, issuer or anonymous profile, else the
policy's high tier, else ``REGISTRAR_HIGH_RISK_APPROVAL_WINDOW`` (``applicable_window``).

An initial access token, a trusted issuer or an anonymous registration profile may carry ``allowed_networks``, a
list of CIDR blocks (IPv4 or IPv6; empty = from anywhere). A registration with that token, with a software statement
of that issuer or under that profile — and every later RFC 7592 call on a registration it created — is accepted only
from an address inside one of them. A policy tier may carry them too (``low_allowed_networks`` …): judged by the
policy itself once it has decided the registration's tier (``approvals.policy``, on ``address_allowed``), and here
on RFC 7592 calls, for the registration's tier under the active policy version.

**Which address.** The client's *real* address, derived the one way Registrar derives it everywhere
(``portal.loginthrottle.client_address``, allauth's adapter, ``portal.settings``): with
``REGISTRAR_TRUSTED_PROXY_COUNT = N`` the N-th ``X-Forwarded-For`` entry from the right (what the outermost trusted
proxy appended), or the header named by ``REGISTRAR_TRUSTED_CLIENT_IP_HEADER``; with neither configured, the TCP
peer (``REMOTE_ADDR``), and ``X-Forwarded-For`` is ignored — any client can write it, so a spoofed header opens
nothing. A request with fewer forwarded entries than trusted proxies did not come through them: its peer counts.

**Refusals** are RFC 7591 error bodies naming the condition, the credential and the address, answered before
anything is written (no request, no token use, no audit event): ``403 {"error": "access_denied"}`` for a token or
an anonymous profile, ``403 {"error": "unapproved_software_statement"}`` for an issuer's statement. Called from
``approvals.oauth2.views`` (one call in ``_register``, one in ``manage``).

Over 400 lines on purpose: both conditions share one job (is this request allowed from here, now?) and one
precedence (token, issuer or profile, then the policy tier, then the setting); split, the precedence would be
written twice.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError

from approvals.oauth2.errors import IntakeError
from portal.logs import log_event

logger = logging.getLogger(__name__)

CONDITION = "allowed_networks"
MAX_NETWORKS = 100
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConditionRefused(IntakeError):
    """403: the credential is valid, but a context condition on it does not hold for this request."""

    status = 403


def networks_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a list of allowed networks, or None: at most 100 CIDR blocks without host
    bits (``10.1.0.0/16``, not ``10.1.2.3/16``, which would mean something else than it says). The first bad
    entry is named. The one rule for tokens, issuers, anonymous profiles and policy tiers."""
    if value in (None, ""):
        return None
    if not isinstance(value, list | tuple):
        return 'allowed networks must be a list of CIDR blocks, e.g. ["10.0.0.0/8"]'
    if len(value) > MAX_NETWORKS:
        return f"at most {MAX_NETWORKS} allowed networks, got {len(value)}"
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            return f"allowed network #{index + 1} is not a string: {entry!r}"
        try:
            ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            return f"allowed network #{index + 1} {entry!r} is not a CIDR block: {exc}"
    return None


def validate_networks(value: Any) -> None:
    """Model field validator (``networks_problem``)."""
    problem = networks_problem(value)
    if problem is not None:
        raise ValidationError(problem)


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


def address_allowed(address: str | None, networks_raw: Iterable[str]) -> bool:
    """Is the address (text; None or unparseable: unknown) inside one of ``networks_raw`` (validated CIDR
    blocks)? For the policy's tier condition, which judges the address ``source_address`` found."""
    try:
        parsed = ipaddress.ip_address(address) if address else None
    except ValueError:
        parsed = None
    return _allowed(parsed, parse_networks(networks_raw))


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
    profile = getattr(requester, "profile", None)
    if profile is not None:
        _check(
            request,
            networks_raw=profile.allowed_networks,
            credential=f"anonymous profile {profile.name!r}",
            error="access_denied",
        )


def registration_call_check(request, registration_id: str, bearer: str | None) -> None:
    """RFC 7592 GET/PUT/DELETE: the networks of the token or issuer that created the registration. Only for a
    caller holding that registration's access token — anyone else gets the usual 401 from the call itself and
    learns nothing about conditions. The previous token (``approvals.oauth2.rat``) is a holder too: its grace is no
    way around the condition."""
    if not bearer:
        return
    from django.db.models import Q

    from approvals.models import RegistrationRequest
    from portal.crypto import hash_token

    token_hash = hash_token(bearer)
    reg_request = (
        RegistrationRequest.objects.filter(
            Q(registration_access_token_hash=token_hash) | Q(rat_previous_hash=token_hash), public_id=registration_id
        )
        .select_related("token", "issuer", "profile")
        .only(
            "pk",
            "token__prefix",
            "token__allowed_networks",
            "issuer__name",
            "issuer__allowed_networks",
            "profile__name",
            "profile__allowed_networks",
            "risk_tier",
        )
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
    if reg_request.profile is not None:
        _check(
            request,
            networks_raw=reg_request.profile.allowed_networks,
            credential=f"anonymous profile {reg_request.profile.name!r}",
            error="access_denied",
        )
    from approvals.policy_store import active_policy

    config = active_policy()  # the tier's networks as the active version has them now
    tier = reg_request.risk_tier
    _check(
        request,
        networks_raw=config.allowed_networks(tier),
        credential=f"the {tier} tier (policy v{config.version})",
        error="access_denied",
    )


# --- the working window for high-risk human approvals -------------------------------------------------------

WINDOW_MAX_LENGTH = 100
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ApprovalWindow:
    """When high-risk approvals are taken: weekdays (0 = Monday), a start and an end time, a time zone."""

    days: frozenset[int]
    start: dt.time
    end: dt.time
    zone: ZoneInfo
    text: str

    def is_open(self, when: dt.datetime) -> bool:
        local = when.astimezone(self.zone)
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def next_opening(self, when: dt.datetime) -> dt.datetime:
        local = when.astimezone(self.zone)
        for ahead in range(8):
            day = local.date() + dt.timedelta(days=ahead)
            opening = dt.datetime.combine(day, self.start, tzinfo=self.zone)
            if day.weekday() in self.days and opening > local:
                return opening
        raise AssertionError("a window with at least one day opens within a week")  # pragma: no cover


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"unknown day in {part!r} (use Mon, Tue, … Sun, ranges like Mon-Fri)")
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        if b < a:
            raise ValueError(f"day range {part!r} runs backwards")
        days.update(range(a, b + 1))
    return frozenset(days)


def window_problem(text: Any) -> str | None:
    """What is wrong with ``text`` as a working window, or None (empty: no window of its own). The one rule for
    the setting, tokens, issuers, anonymous profiles and the policy's high tier; the bad value is named."""
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        return f"working window {text!r} must be text like 'Mon-Fri 08:00-18:00 Europe/Berlin'"
    if not text.strip():
        return None
    if len(text) > WINDOW_MAX_LENGTH:
        return f"working window is longer than {WINDOW_MAX_LENGTH} characters"
    try:
        _parse_window(text)
    except ValueError as exc:
        return f"working window {text!r}: {exc} (expected e.g. 'Mon-Fri 08:00-18:00 Europe/Berlin')"
    return None


def validate_window(value: Any) -> None:
    """Model field validator (``window_problem``)."""
    problem = window_problem(value)
    if problem is not None:
        raise ValidationError(problem)


def _parse_window(text: str) -> ApprovalWindow:
    try:
        days_text, hours, zone_name = text.split()
        start_text, end_text = hours.split("-")
    except ValueError:
        raise ValueError("not three parts: days, hours, time zone") from None
    start, end = dt.time.fromisoformat(start_text), dt.time.fromisoformat(end_text)
    if end <= start:
        raise ValueError("the window must end after it starts, on the same day")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone_name!r}") from None
    return ApprovalWindow(_days(days_text), start, end, zone, text.strip())


def parse_approval_window(text: str | None) -> ApprovalWindow | None:
    """``"Mon-Fri 08:00-18:00 Europe/Berlin"`` (days: names, ranges, commas; the end is exclusive and after the
    start; an IANA zone). Empty: no window. ImproperlyConfigured naming the problem otherwise."""
    if not text or not text.strip():
        return None
    try:
        return _parse_window(text)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"REGISTRAR_HIGH_RISK_APPROVAL_WINDOW {text!r}: {exc} (expected e.g. 'Mon-Fri 08:00-18:00 Europe/Berlin')"
        ) from None


def approval_window() -> ApprovalWindow | None:
    """The global default (``REGISTRAR_HIGH_RISK_APPROVAL_WINDOW``)."""
    from django.conf import settings

    return parse_approval_window(getattr(settings, "REGISTRAR_HIGH_RISK_APPROVAL_WINDOW", ""))


@dataclass(frozen=True)
class AppliedWindow:
    """The working window that applies to one request, and where it comes from (for messages and the page)."""

    window: ApprovalWindow
    source: str  # "the token's working window", "the high tier's working window (policy v3)", …

    @property
    def described(self) -> str:
        return f"{self.source} {self.window.text}"


def applicable_window(reg_request) -> AppliedWindow | None:
    """The most specific working window for ``reg_request``'s high-risk approval: its initial access token's, its
    statement issuer's or its anonymous profile's; else the high tier's in the active policy; else the global
    setting; None when none is set. Values were validated when saved; one that no longer parses is skipped."""
    own = (
        ("token", "the token's working window"),
        ("issuer", "the trusted issuer's working window"),
        ("profile", "the anonymous profile's working window"),
    )
    for attr, source in own:
        holder = getattr(reg_request, attr, None) if getattr(reg_request, f"{attr}_id", None) else None
        text = getattr(holder, "approval_window", "") if holder is not None else ""
        if text and window_problem(text) is None:
            return AppliedWindow(_parse_window(text), source)
    from approvals.policy_store import active_policy

    config = active_policy()
    if config.high_approval_window and window_problem(config.high_approval_window) is None:
        return AppliedWindow(
            _parse_window(config.high_approval_window), f"the high tier's working window (policy v{config.version})"
        )
    default = approval_window()
    if default is not None:
        return AppliedWindow(default, "the working window REGISTRAR_HIGH_RISK_APPROVAL_WINDOW")
    return None


def approval_window_closed(now: dt.datetime, reg_request=None) -> str | None:
    """Why a high-risk human approval of ``reg_request`` cannot be taken at ``now`` (the request waits, pending),
    or None. Without a request: the global setting only."""
    if reg_request is not None:
        applied = applicable_window(reg_request)
    else:
        default = approval_window()
        applied = AppliedWindow(default, "the working window REGISTRAR_HIGH_RISK_APPROVAL_WINDOW") if default else None
    if applied is None or applied.window.is_open(now):
        return None
    window = applied.window
    opens = window.next_opening(now)
    return (
        f"condition approval_window: high-risk approvals are taken in {applied.described}; this request waits "
        f"until {opens:%a %Y-%m-%d %H:%M} {window.zone.key}"
    )


__all__ = [
    "address_allowed",
    "networks_problem",
    "ApprovalWindow",
    "approval_window",
    "approval_window_closed",
    "applicable_window",
    "AppliedWindow",
    "validate_window",
    "window_problem",
    "parse_approval_window",
    "CONDITION",
    "ConditionRefused",
    "parse_networks",
    "registration_call_check",
    "requester_check",
    "source_address",
    "validate_networks",
]
