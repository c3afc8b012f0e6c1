"""What the race tests share besides fixtures: marks, the server's rate limits, request bodies, and ``World``,
which builds a race's data in the server's database through this process's ORM (conftest points it there)."""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from tests.races.harness import Call, Person, RaceServer, bearer

# Every race module: ``pytestmark = RACE``. slow: it needs the server; one xdist group: one server per session.
# postgres_only: the race server runs on a PostgreSQL database of its own (tests/races/harness.py).
RACE = [pytest.mark.slow, pytest.mark.xdist_group("races"), pytest.mark.postgres_only]

# Rate limits of the server under test: low enough that the rate-limit races reach them with one burst, high
# enough that no other race comes near (every burst call connects from a loopback address of its own, and no
# other race sends more than RATE_PER_TOKEN calls with one credential).
RATE_PER_TOKEN = 60
RATE_PER_ADDRESS = 20

REGISTER = "/oauth2/register"


def live(owner) -> int:
    """The owner's live clients (what max_live_clients_per_owner caps)."""
    from inventory.choices import LIVE_STATES
    from inventory.models import Client

    return Client.objects.filter(owner=owner, state__in=LIVE_STATES).count()


def actions(**filters) -> Counter:
    """Audit events matching ``filters``, counted by action."""
    from portal.models import AuditEvent

    return Counter(AuditEvent.objects.filter(**filters).values_list("action", flat=True))


class World:
    """Builds a race's data in the server's database; names are unique within the session."""

    _serial = itertools.count(1)

    def __init__(self, server: RaceServer) -> None:
        self.server = server

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._serial)}"

    # -- people ----------------------------------------------------------------------------------------------

    def user(self, *roles: str, **fields):
        from tests.factories import UserFactory

        return UserFactory(username=self.name(roles[0] if roles else "person"), roles=list(roles), **fields)

    def owner(self, *, live: int = 0, **fields):
        """An owner who already has ``live`` active clients (on the dry-run IdP; they are never delivered)."""
        owner = self.user("owner", **fields)
        self.clients(owner, live)
        return owner

    def person(self, user) -> Person:
        """``user`` signed in: a server-side session (what the login page would create) and a CSRF token."""
        from allauth.mfa.models import Authenticator
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.contrib.sessions.backends.db import SessionStore

        from portal.roles import is_privileged

        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        if is_privileged(user):
            # The server runs the production rule (portal.mfa): a privileged person has a second factor and
            # their login used it, as allauth records it in the session.
            totp = Authenticator.objects.create(user=user, type=Authenticator.Type.TOTP, data={"secret": "RACE"})
            session["account_authentication_methods"] = [
                {"method": "password", "at": time.time(), "username": user.username},
                {"method": "mfa", "at": time.time(), "id": totp.pk, "type": "totp"},
            ]
            session["account_authentication_methods_user"] = str(user.pk)
        session.create()
        return Person(user.username, session.session_key, secrets.token_hex(16))

    def api_token(self, user) -> str:
        from portal.crypto import hash_token, new_token
        from portal.models import ApiToken

        plaintext = new_token("rapi")
        ApiToken.objects.create(user=user, name="race", prefix=plaintext[:12], token_hash=hash_token(plaintext))
        return plaintext

    # -- things they own -------------------------------------------------------------------------------------

    def clients(self, owner, n: int, **fields) -> list:
        from inventory.choices import ClientState, RiskTier
        from inventory.models import Client

        defaults = {
            "idp": self.server.seed_idp,
            "state": ClientState.ACTIVE,
            "risk_tier": RiskTier.LOW,
            "scopes": ["tickets:read"],
            "purpose": "made for a race",
            "expires_at": timezone.now() + timedelta(hours=12),
        }
        defaults.update(fields)
        rows = []
        for _ in range(n):
            name = self.name("client")
            rows.append(Client(registration_id=f"reg_{name}", name=name, owner=owner, **defaults))
        return Client.objects.bulk_create(rows)

    def token(self, owner, *, max_uses: int = 1, **fields) -> tuple:
        """An initial access token of ``owner``; returns (row, plaintext)."""
        from tests.factories import TokenFactory

        plaintext = f"rat_{self.name('race')}_{secrets.token_urlsafe(18)}"
        fields.setdefault("allowed_scopes", ["tickets:read", "docs:read", "tickets:write", "repo:write"])
        fields.setdefault("max_ttl_seconds", 86400)
        row = TokenFactory(owner=owner, plaintext=plaintext, max_uses=max_uses, **fields)
        return row, plaintext

    def pending(self, owner, *, tier: str = "medium", **fields):
        """A registration request waiting for review (high tier needs two approvers)."""
        from approvals.choices import RequestState
        from tests.factories import RequestFactory

        token, _ = self.token(owner)
        high = tier == "high"
        defaults = {
            "public_id": f"reg_{self.name('pending')}",
            "state": RequestState.PENDING,
            "owner": owner,
            "token": token,
            "idp": self.server.idp,
            "risk_tier": tier,
            "approvals_needed": 2 if high else 1,
            "outcome": "review",
            "requested_scopes": ["repo:write"] if high else ["tickets:write"],
            "requested_ttl": 3600,
            "metadata": {
                "client_name": "race-agent",
                "jwks": AGENT_JWKS,
                "token_endpoint_auth_method": "private_key_jwt",
            },
        }
        defaults.update(fields)
        return RequestFactory(**defaults)

    def registration(self, owner, *, scope: str = "tickets:read") -> tuple:
        """A client registered over HTTP (auto-approved): returns (client, registration_client_uri, RAT)."""
        from inventory.models import Client

        _, plaintext = self.token(owner)
        answer = self.server.call(
            Call("POST", "/oauth2/register", json=body(self.name("agent"), scope=scope), headers=bearer(plaintext))
        )
        assert answer.status in (201, 202), answer.text
        info = answer.json
        client = Client.objects.get(registration_id=info["registration_id"])
        return client, urlsplit(info["registration_client_uri"]).path, info["registration_access_token"]


def _agent_jwks() -> dict:
    from tests.agents import Agent

    return Agent().jwks


AGENT_JWKS = _agent_jwks()


def body(name: str, *, scope: str = "tickets:read", **extra) -> dict:
    """RFC 7591 metadata: low risk (auto-approved) with the default scope, review with a medium one."""
    return {
        "client_name": name,
        "purpose": "race test agent",
        "scope": scope,
        "internal_only": True,
        "jwks": AGENT_JWKS,
        "requested_ttl": 3600,
        "token_endpoint_auth_method": "private_key_jwt",
        **extra,
    }
