"""What the invariant matrix shares: the people (one per role), a client made the way production makes one, an
IdP whose copy of a client can be tampered with, and the paths (agent, pages, API, admin, SCIM, sweeps, break
glass, reconciliation) each test module tries as every role.

A *path* is a function ``path(ctx, role)`` that tries to do one thing through one door as ``role`` and swallows
the refusal (an HTTP 4xx, a domain error): the test then checks the invariant on the data, so a path that gets
through fails the test whatever the response said.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from django.contrib.auth.models import Group
from django.test import Client as HttpClient
from django.utils import timezone
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from approvals import intake, policy_store
from approvals.models import RegistrationRequest, TrustedIssuer
from approvals.services import DecisionError, request_approve
from inventory.choices import ClientState
from inventory.connectors.base import RemoteClient
from inventory.connectors.dryrun import DryRunConnector
from inventory.connectors.registry import _REGISTRY, register
from inventory.lifecycle import LifecycleError
from inventory.models import Client
from inventory.outbox.deliver import deliver_client_outbox
from portal.roles import Role
from tests.factories import IdPFactory, TokenFactory, UserFactory

REGISTER = "/oauth2/register"
AGENT_KEY = ECKey.generate_key("P-256", auto_kid=True)
PUBLIC_JWKS = {"keys": [AGENT_KEY.as_dict(private=False)]}
ISSUER = "https://ci.invariants.example"
AUDIENCE = "https://registrar.example/oauth2/register"
ISSUER_KEY = RSAKey.generate_key(2048, parameters={"kid": "inv-1"})
SCIM_TOKEN = "scim-invariants-token-0123456789"  # noqa: S105 - a test value

# Who may try each door. "agent" holds the client's registration access token; "system" runs sweeps.
PEOPLE = ("anonymous", "owner", "other_owner", "approver", "security", "admin")
ROLES = (*PEOPLE, "agent", "system")


# --- an IdP whose copy of each client the tests can tamper with --------------------------------------------


class TamperableConnector(DryRunConnector):
    """Like the dry-run connector, but it remembers clients across instances and lists them, so reconciliation
    compares something; :meth:`tamper` changes the IdP's copy behind Registrar's back."""

    kind: ClassVar[str] = "invariant-fake"
    remote: ClassVar[dict[str, RemoteClient]] = {}

    def _remember(self, client_id: str, spec) -> None:
        self.remote[client_id] = RemoteClient(
            client_id=client_id,
            registrar_id=spec.registrar_id,
            enabled=spec.enabled,
            scopes=list(spec.scopes),
            metadata={},
        )

    def create(self, spec):
        result = super().create(spec)
        self._remember(result.client_id, spec)
        return result

    def update(self, client_id, spec, remote_state):
        result = super().update(client_id, spec, remote_state)
        self._remember(client_id, spec)
        return result

    def disable(self, client_id, spec, remote_state):
        result = super().disable(client_id, spec, remote_state)
        old = self.remote.get(client_id)
        if old is not None:
            self.remote[client_id] = RemoteClient(client_id, old.registrar_id, False, old.scopes, {})
        return result

    def delete(self, client_id, remote_state):
        super().delete(client_id, remote_state)
        self.remote.pop(client_id, None)

    def get(self, client_id, remote_state):
        return self.remote.get(client_id) or super().get(client_id, remote_state)

    def list(self) -> Iterator[RemoteClient]:
        return iter(list(self.remote.values()))

    @classmethod
    @contextlib.contextmanager
    def registered(cls) -> Iterator[None]:
        """Available under its kind while the matrix runs only (the connector registry is process-wide)."""
        register(cls)
        try:
            yield
        finally:
            _REGISTRY.pop(cls.kind, None)

    @classmethod
    def tamper(cls, client: Client, *, enabled: bool = True, extra_scopes: tuple[str, ...] = ()) -> None:
        old = cls.remote[client.idp_client_id]
        cls.remote[client.idp_client_id] = RemoteClient(
            client.idp_client_id, old.registrar_id, enabled, sorted({*old.scopes, *extra_scopes}), {}
        )


# --- people and clients ------------------------------------------------------------------------------------


@dataclass
class World:
    """Everyone and everything one matrix cell needs. ``clients`` and ``bearers`` are filled by each module."""

    users: dict[str, Any]
    idp: Any
    token: Any = None
    token_plaintext: str = ""
    clients: dict[str, Client] = field(default_factory=dict)
    bearers: dict[str, str] = field(default_factory=dict)  # client key -> its current registration access token
    notes: dict[str, Any] = field(default_factory=dict)

    def user(self, role: str):
        return self.users.get(role)

    def http(self, role: str) -> HttpClient:
        http = HttpClient()
        user = self.users.get(role)
        if user is not None:
            http.force_login(user)
        return http

    def fresh(self, key: str) -> Client:
        return Client.objects.get(pk=self.clients[key].pk)


def build_world() -> World:
    for role in Role:
        Group.objects.get_or_create(name=role.value)
    users = {
        "anonymous": None,
        "owner": UserFactory(username="inv-owner", roles=["owner"]),
        "other_owner": UserFactory(username="inv-other", roles=["owner"]),
        "approver": UserFactory(username="inv-approver", roles=["approver"]),
        "approver2": UserFactory(username="inv-approver2", roles=["approver"]),
        "security": UserFactory(username="inv-ciso", roles=["security"]),
        "admin": UserFactory(username="inv-admin", roles=["admin"], is_staff=True, is_superuser=True),
    }
    TamperableConnector.remote.clear()
    idp = IdPFactory(
        name="invariant-idp",
        kind="invariant-fake",
        is_default=True,
        config={"issuer": "https://idp.invariants", "token_endpoint": "https://idp.invariants/token"},
    )
    policy_store.clear_cache()
    intake.clear_caches()
    plaintext = "rat_invariants_" + "x" * 24
    token = TokenFactory(
        owner=users["owner"],
        plaintext=plaintext,
        max_uses=100,
        max_ttl_seconds=7 * 86400,
        allowed_scopes=["tickets:read", "docs:read", "tickets:write", "crm:read", "repo:write"],
        idp=idp,
    )
    return World(users=users, idp=idp, token=token, token_plaintext=plaintext)


def body(**overrides) -> dict:
    data = {
        "client_name": "matrix-agent",
        "purpose": "invariant matrix agent",
        "scope": "tickets:read",
        "internal_only": True,
        "jwks": PUBLIC_JWKS,
        "requested_ttl": 3600,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def register_http(bearer: str | None, payload: dict):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {bearer}"} if bearer else {}
    return HttpClient().post(REGISTER, json.dumps(payload), content_type="application/json", **headers)


def rfc7592(method: str, registration_id: str, bearer: str, payload: dict | None = None):
    http = HttpClient()
    fn = getattr(http, method.lower())
    headers = {"HTTP_AUTHORIZATION": f"Bearer {bearer}"}
    if payload is None:
        return fn(f"{REGISTER}/{registration_id}", **headers)
    return fn(f"{REGISTER}/{registration_id}", json.dumps(payload), content_type="application/json", **headers)


def deliver(client: Client) -> Client:
    deliver_client_outbox(client.pk)
    return Client.objects.get(pk=client.pk)


def approved_client(
    world: World,
    *,
    scope: str,
    requested_ttl: int,
    internal_only: bool = False,
    grant_scopes: list[str] | None = None,
    grant_ttl: int | None = None,
    audiences: list[str] | None = None,
    name: str = "matrix-agent",
) -> tuple[Client, str]:
    """A client the production way: registered with the token (RFC 7591), approved by people with their
    narrowing, created at the IdP. Returns the active client and the agent's registration access token."""
    payload = body(client_name=name, scope=scope, requested_ttl=requested_ttl, internal_only=internal_only)
    if audiences:
        payload["audiences"] = audiences
    response = register_http(world.token_plaintext, payload)
    assert response.status_code in (201, 202), response.content
    data = response.json()
    request = RegistrationRequest.objects.get(public_id=data["registration_id"])
    if request.state == "pending":
        kwargs: dict[str, Any] = {}
        if grant_scopes is not None:
            kwargs["scopes"] = grant_scopes
        if grant_ttl is not None:
            kwargs["ttl_seconds"] = grant_ttl
        for approver in ("approver", "approver2")[: max(1, request.approvals_needed)]:
            request_approve(request=request, approver=world.user(approver), reason="matrix approval", **kwargs)
            request.refresh_from_db()
    client = deliver(Client.objects.get(registration_id=data["registration_id"]))
    assert client.state == ClientState.ACTIVE, client.state
    return client, data["registration_access_token"]


def sign_statement(subject: str = "repo:acme/agents:ref:refs/heads/main") -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": subject,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": f"inv-{time.monotonic_ns()}",
    }
    return jwt.encode({"alg": "RS256", "kid": ISSUER_KEY.kid}, payload, ISSUER_KEY, algorithms=["RS256"])


def trusted_issuer(world: World) -> TrustedIssuer:
    return TrustedIssuer.objects.create(
        name="inv-ci",
        kind="oidc",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks={"keys": [ISSUER_KEY.as_dict(private=False)]},
        subject="repo:acme/agents:*",
        owner=world.user("owner"),
        purpose="CI agents",
        allowed_scopes=["tickets:read"],
        max_ttl_seconds=3600,
        internal_only=True,
        idp=world.idp,
    )


# --- trying things -------------------------------------------------------------------------------------------


REFUSALS = (LifecycleError, DecisionError, PermissionError)


@contextlib.contextmanager
def refused_ok() -> Iterator[None]:
    """A refusal is a fine outcome for a path: the invariant check afterwards decides."""
    with contextlib.suppress(*REFUSALS):
        yield


def scim(method: str, path: str, payload: Mapping | None = None):
    http = HttpClient()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {SCIM_TOKEN}"}
    fn = getattr(http, method.lower())
    if payload is None:
        return fn(f"/scim/v2/{path}", **headers)
    return fn(f"/scim/v2/{path}", json.dumps(payload), content_type="application/scim+json", **headers)


@dataclass(frozen=True)
class Path:
    """One door: ``attempt(world, role)``; ``roles`` it is tried as."""

    name: str
    attempt: Callable[[World, str], None]
    roles: tuple[str, ...] = PEOPLE

    def __str__(self) -> str:
        return self.name


def matrix(paths: list[Path]) -> list[tuple[Path, str]]:
    return [(p, role) for p in paths for role in p.roles]


def cell_id(value) -> str:
    return str(value)


def later(days: float) -> Any:
    return timezone.now() + timedelta(days=days)
