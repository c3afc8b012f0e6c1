"""Fixtures and helpers for the intake tests (imported by tests/approvals/test_intake*.py).

Kept out of conftest.py so other helpers' fixtures in this folder cannot collide with these names.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from joserfc.jwk import ECKey

from approvals import policy_store
from approvals.models import InitialAccessToken, RegistrationRequest
from approvals.oauth2 import cache as oauth2_cache
from inventory.models import Client, OutboxEntry
from portal.models import AuditEvent
from tests.factories import TokenFactory

REGISTER = "/oauth2/register"
EC_KEY = ECKey.generate_key("P-256", auto_kid=True)
PUBLIC_JWKS = {"keys": [EC_KEY.as_dict(private=False)]}


@pytest.fixture(autouse=True)
def _fresh_limits_and_policy():
    """Rate-limit counters live in the (locmem) cache; policy, catalogue and default IdP per process: reset all."""
    cache.clear()
    policy_store.clear_cache()
    oauth2_cache.clear_caches()
    yield
    cache.clear()
    policy_store.clear_cache()
    oauth2_cache.clear_caches()


def low_body(**overrides) -> dict:
    """Metadata the default policy auto-approves: internal-only, one low scope, private_key_jwt."""
    body = {
        "client_name": "ticket-summariser",
        "purpose": "Summarise support tickets nightly",
        "scope": "tickets:read",
        "internal_only": True,
        "jwks": PUBLIC_JWKS,
        "requested_ttl": 3600,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def make_token(owner, plaintext: str | None = None, **kwargs) -> tuple[InitialAccessToken, str]:
    kwargs.setdefault("allowed_scopes", ["tickets:read", "docs:read", "tickets:write", "crm:read", "repo:write"])
    kwargs.setdefault("max_uses", 10)
    kwargs.setdefault("max_ttl_seconds", 7 * 86400)
    kwargs.setdefault("internal_only", False)
    kwargs.setdefault("expires_at", timezone.now() + timedelta(days=1))
    plaintext = plaintext or f"rat_test_{owner.pk}_{InitialAccessToken.objects.count()}_xxxxxxxxxxxx"
    token = TokenFactory(owner=owner, plaintext=plaintext, **kwargs)
    return token, plaintext


def post(client, body, bearer: str | None = None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {bearer}"} if bearer else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        REGISTER, data=data, content_type=extra.pop("content_type", "application/json"), **headers, **extra
    )


def call(client, method: str, uri: str, bearer: str | None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {bearer}"} if bearer else {}
    fn = getattr(client, method.lower())
    if body is None:
        return fn(uri, **headers)
    return fn(uri, data=json.dumps(body), content_type="application/json", **headers)


def counts() -> dict[str, int]:
    return {
        "requests": RegistrationRequest.objects.count(),
        "clients": Client.objects.count(),
        "outbox": OutboxEntry.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


def refusals_counted() -> int:
    """Refused credentials counted on the request path and not yet folded into the audit chain."""
    from django.db.models import Sum

    from approvals.models import UnauthorizedTally

    return UnauthorizedTally.objects.aggregate(n=Sum("count"))["n"] or 0


def fold_refusals() -> list[AuditEvent]:
    """Fold every refused-credential tally as the minute-ly beat task would once their minute is over; the
    events it wrote, oldest first."""
    from approvals.unauthorized import unauthorized_fold

    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    unauthorized_fold(now=timezone.now() + timedelta(minutes=2))
    return list(AuditEvent.objects.filter(id__gt=last).order_by("id"))


def path_of(uri: str) -> str:
    return uri.split("testserver", 1)[-1]
