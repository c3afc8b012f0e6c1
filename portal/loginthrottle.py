"""Login throttling that stops guessers without handing them a way to lock people out.

Three limits on password logins, all keyed on the *real* client address (:func:`client_address`: the one
the trusted proxies saw, never a header the client could set itself):

1. **per address** (allauth's ``login_failed`` ``/ip`` rate, ``REGISTRAR_LOGIN_FAILURES_PER_ADDRESS``):
   failed logins from one address, whatever the account. Stops a spray from one place;
2. **per account, per address** (allauth's ``/key`` rate with the key made of account *and* address,
   ``REGISTRAR_LOGIN_FAILURES_PER_ACCOUNT``): a guesser at ``bob`` is stopped at its own address, while
   bob, anywhere else, still signs in. allauth's default key is the account alone, which let five wrong
   passwords from anywhere lock any named approver out;
3. **per account, slowing down** (here): once an account has had ``REGISTRAR_LOGIN_SLOWDOWN_AFTER``
   failures within the window, from however many addresses, each further try *from an address the account
   has not signed in from* must wait 1, 2, 4 ... seconds after the last failure, capped at
   ``REGISTRAR_LOGIN_SLOWDOWN_MAX_SECONDS``. A botnet gets a handful of guesses an hour; the person at their
   usual address is never slowed, and from a new address waits at most the cap.

The state lives in Django's cache (Redis in production). Losing it forgets counters, nothing else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time

from django.conf import settings
from django.core.cache import cache

from portal.logs import log_event

logger = logging.getLogger(__name__)

_warned_untrusted_proxy = False


def now() -> float:
    return time.time()


def client_address(request) -> str:
    """The client's address as allauth's rate limits see it (``ALLAUTH_TRUSTED_*``, see portal.settings)."""
    from allauth.account.adapter import get_adapter

    return get_adapter(request).get_client_ip(request)


def peer_address_fallback(request) -> str | None:
    """For a request with fewer ``X-Forwarded-For`` entries than the configured proxy count (allauth raises
    ImproperlyConfigured for it): it did not come through the proxies, so its peer address is the client."""
    return request.META.get("REMOTE_ADDR") or None


def warn_if_behind_an_untrusted_proxy(request) -> None:
    """Once per process: forwarded requests from a private address with no proxy trusted means every
    client behind that proxy shares one address, so one guesser throttles them all."""
    global _warned_untrusted_proxy
    if _warned_untrusted_proxy or settings.ALLAUTH_TRUSTED_PROXY_COUNT or settings.ALLAUTH_TRUSTED_CLIENT_IP_HEADER:
        return
    if "HTTP_X_FORWARDED_FOR" not in request.META:
        return
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return
    if peer.is_private or peer.is_loopback:
        _warned_untrusted_proxy = True
        log_event(
            logger,
            "login_throttle_proxy_untrusted",
            level=logging.WARNING,
            peer=peer,
            hint="set REGISTRAR_TRUSTED_PROXY_COUNT (or REGISTRAR_TRUSTED_CLIENT_IP_HEADER) so login limits apply per "
            "client",
        )


def account_of(credentials: dict) -> str:
    """The account a login names, as allauth keys it (email if given, else username), normalised."""
    return str(credentials.get("email") or credentials.get("username") or "").strip().lower()


def _key(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]
    return f"registrar:login:{kind}:{digest}"


def wait_seconds(*, account: str, address: str) -> int:
    """How long a login for ``account`` from ``address`` must still wait (0: go ahead)."""
    if not account or cache.get(_key("known", account, address)):
        return 0
    state = cache.get(_key("failures", account))
    if not state:
        return 0
    failures, last_failure = state
    excess = failures - settings.REGISTRAR_LOGIN_SLOWDOWN_AFTER
    if excess < 0:
        return 0
    delay = min(2 ** min(excess, 30), settings.REGISTRAR_LOGIN_SLOWDOWN_MAX_SECONDS)
    return max(0, int(last_failure + delay - now() + 0.999))


def record_failure(*, account: str) -> None:
    if not account:
        return
    key = _key("failures", account)
    failures, _ = cache.get(key) or (0, 0.0)
    cache.set(key, (failures + 1, now()), settings.REGISTRAR_LOGIN_SLOWDOWN_WINDOW_SECONDS)


def record_success(*, account: str, address: str) -> None:
    """The account signed in from ``address``: it is not slowed down there from now on."""
    if account and address:
        cache.set(_key("known", account, address), True, settings.REGISTRAR_LOGIN_KNOWN_ADDRESS_DAYS * 86400)


def slowed(*, account: str, address: str) -> bool:
    wait = wait_seconds(account=account, address=address)
    if wait:
        log_event(
            logger,
            "login_slowed",
            level=logging.WARNING,
            account_hash=hashlib.sha256(account.encode()).hexdigest()[:12],
            address=address,
            wait_s=wait,
        )
    return bool(wait)
