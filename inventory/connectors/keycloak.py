"""Keycloak connector (kind ``keycloak``) over the Admin REST API.

Config:
    ``base_url``          e.g. ``https://sso.example.com`` (no ``/auth`` suffix on Keycloak >= 17)
    ``realm``             the realm the clients live in
    ``admin_realm``       optional; realm of the admin service account (default: ``realm``; use ``master``
                          for a master-realm admin client)
    ``client_id_prefix``  optional; prepended to Registrar's id to form the Keycloak ``clientId``
Secrets:
    ``admin_client_id``, ``admin_client_secret``: a confidential client with a service account holding
    ``realm-management`` roles ``manage-clients`` and ``view-clients``, used with client_credentials.
Remote state (per client): ``id`` (Keycloak's internal UUID) and ``client_secret`` if Keycloak made one.
Usage: :meth:`KeycloakConnector.usage` reads ``CLIENT_LOGIN`` admin events (role ``view-events``; realm events on).

Each Registrar client becomes a confidential, service-account-only client whose ``clientId`` Registrar chooses
(its own id), so a repeated create answers 409 -> :class:`AlreadyExists` naming that id and the caller adopts.
Key-based auth uses ``clientAuthenticatorType: client-jwt`` with the agent's JWKS inline
(``use.jwks.string``/``jwks.string``) or by URL. Scopes map to Keycloak client scopes of the same name as
*default* client scopes. ``attributes["registrar.id"]`` is the correlation marker.

Keycloak issues JWT access tokens: disabling or deleting a client makes refresh and introspection fail at
once, but a resource server that validates JWTs offline keeps accepting unexpired tokens (keep their lifetimes
short).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from inventory.connectors.base import (
    BaseConnector,
    ClientSpec,
    PushResult,
    RemoteClient,
    require_str,
)
from inventory.connectors.errors import AlreadyExists, BadRequest, ConnectorError, NotFound
from inventory.connectors.registry import register
from portal.logs import log_event

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
MARKER_ATTRIBUTE = "registrar.id"
# Clients every Keycloak realm has; not shadow identities, so list() leaves them out.
BUILTIN_CLIENT_IDS = frozenset(
    {"account", "account-console", "admin-cli", "broker", "realm-management", "security-admin-console"}
)
_AUTHENTICATOR = {
    "private_key_jwt": "client-jwt",
    "client_secret_basic": "client-secret",
    "client_secret_post": "client-secret",
    "client_secret_jwt": "client-secret-jwt",
    "tls_client_auth": "client-x509",
}


@register
class KeycloakConnector(BaseConnector):
    kind: ClassVar[str] = "keycloak"
    sensitive_params: ClassVar[frozenset[str]] = frozenset({"admin_client_secret", "client_secret", "secret"})
    required_config: ClassVar[frozenset[str]] = frozenset({"base_url", "realm"})
    required_secrets: ClassVar[frozenset[str]] = frozenset({"admin_client_id", "admin_client_secret"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = self.config["base_url"].rstrip("/")
        self.realm = self.config["realm"]
        self._admin_token: str | None = None
        self._admin_token_expires = 0.0

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{quote(self.realm, safe='')}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    def _admin_url(self, path: str = "") -> str:
        return f"{self.base_url}/admin/realms/{quote(self.realm, safe='')}/clients{path}"

    # -- HTTP ------------------------------------------------------------------------------------------

    def _access_token(self, *, refresh: bool = False) -> str:
        if not refresh and self._admin_token and time.monotonic() < self._admin_token_expires:
            return self._admin_token
        admin_realm = quote(self.config.get("admin_realm") or self.realm, safe="")
        response = BaseConnector._request(
            self,
            "POST",
            f"{self.base_url}/realms/{admin_realm}/protocol/openid-connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.secrets["admin_client_id"],
                "client_secret": self.secrets["admin_client_secret"],
            },
        )
        body = response.json()
        self._admin_token = require_str(body.get("access_token"), "access_token")
        # Renew 30 s early so a token never expires between our check and Keycloak's.
        self._admin_token_expires = time.monotonic() + max(0, int(body.get("expires_in", 60)) - 30)
        return self._admin_token

    def _request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """An Admin REST call with a service-account bearer token; one retry with a fresh token on 401."""
        for attempt in (1, 2):
            token = self._access_token(refresh=attempt == 2)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            try:
                return super()._request(method, url, headers=headers, json=json, params=params, secret_values=[token])
            except BadRequest as exc:
                if exc.status_code != 401 or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def check_credentials(self) -> list[str]:
        """A fresh service-account token, then one page of one client (needs ``view-clients``)."""
        self._access_token(refresh=True)
        proven = ["admin_client_id / admin_client_secret: the token endpoint issued a service-account token"]
        self._request("GET", self._admin_url(), params={"first": 0, "max": 1})
        proven.append("the service account may read this realm's clients (view-clients)")
        return proven

    # -- mapping -----------------------------------------------------------------------------------------

    def client_id_for(self, spec: ClientSpec) -> str:
        """The spec's own client_id (a CIMD client's URL: Keycloak's CIMD support knows it by that), else the
        prefix and Registrar's id."""
        return spec.client_id or f"{self.config.get('client_id_prefix', '')}{spec.registrar_id}"

    def representation_for(self, spec: ClientSpec, client_id: str) -> dict[str, Any]:
        """Keycloak ``ClientRepresentation`` for ``spec``; ``extra`` may add or override top-level fields."""
        attributes: dict[str, str] = {MARKER_ATTRIBUTE: spec.registrar_id}
        if spec.jwks is not None:
            attributes.update({"use.jwks.string": "true", "jwks.string": json.dumps(spec.jwks, sort_keys=True)})
        elif spec.jwks_uri is not None:
            attributes.update({"use.jwks.url": "true", "jwks.url": spec.jwks_uri})
        if spec.expires_at is not None:
            attributes["registrar.expires_at"] = spec.expires_at.isoformat()
        if spec.software_id:
            attributes["registrar.software_id"] = spec.software_id
        if spec.software_version:
            attributes["registrar.software_version"] = spec.software_version
        public = spec.token_endpoint_auth_method == "none"  # a public client (a CIMD document's), PKCE only
        if public:
            attributes["pkce.code.challenge.method"] = "S256"
        try:
            authenticator = _AUTHENTICATOR["client_secret_basic" if public else spec.token_endpoint_auth_method]
        except KeyError:
            raise BadRequest(
                f"{self.kind}: token_endpoint_auth_method {spec.token_endpoint_auth_method!r} is unsupported"
            ) from None
        representation: dict[str, Any] = {
            "clientId": client_id,
            "name": spec.client_name,
            "description": f"Managed by Registrar ({spec.registrar_id})",
            "enabled": spec.enabled,
            "protocol": "openid-connect",
            "publicClient": public,
            "bearerOnly": False,
            "clientAuthenticatorType": authenticator,
            "serviceAccountsEnabled": "client_credentials" in spec.grant_types,
            "standardFlowEnabled": "authorization_code" in spec.grant_types,
            "implicitFlowEnabled": False,
            "directAccessGrantsEnabled": False,
            "fullScopeAllowed": False,
            "redirectUris": list(spec.redirect_uris),
            "defaultClientScopes": list(spec.scopes),
            "optionalClientScopes": [],
            "attributes": attributes,
        }
        representation.update(spec.extra)
        return representation

    def _remote_client(self, representation: Mapping[str, Any]) -> RemoteClient:
        attributes = representation.get("attributes") or {}
        marker = attributes.get(MARKER_ATTRIBUTE)
        return RemoteClient(
            client_id=require_str(representation.get("clientId"), "clientId"),
            registrar_id=marker if isinstance(marker, str) and marker else None,
            enabled=bool(representation.get("enabled", True)),
            scopes=list(representation.get("defaultClientScopes") or []),
            metadata={key: value for key, value in representation.items() if key != "secret"},
        )

    def _internal_id(self, client_id: str, remote_state: Mapping[str, Any]) -> str:
        if remote_state.get("id"):
            return remote_state["id"]
        found = self._request("GET", self._admin_url(), params={"clientId": client_id, "search": "false"}).json()
        for representation in found:
            if representation.get("clientId") == client_id:
                return require_str(representation.get("id"), "id")
        raise NotFound(f"{self.kind}: no client {client_id} in realm {self.realm}")

    def _with_secret(self, internal_id: str, spec: ClientSpec, state: dict[str, Any]) -> dict[str, Any]:
        if _AUTHENTICATOR.get(spec.token_endpoint_auth_method) == "client-secret":
            secret = self._request("GET", self._admin_url(f"/{internal_id}/client-secret")).json()
            state["client_secret"] = require_str(secret.get("value"), "client secret")
        return state

    # -- operations ----------------------------------------------------------------------------------

    def create(self, spec: ClientSpec) -> PushResult:
        client_id = self.client_id_for(spec)
        try:
            response = self._request("POST", self._admin_url(), json=self.representation_for(spec, client_id))
        except AlreadyExists as exc:
            raise AlreadyExists(
                f"{self.kind}: client {client_id} already exists in realm {self.realm}",
                client_id=client_id,
                status_code=exc.status_code,
                detail=exc.detail,
            ) from exc
        location = response.headers.get("location", "")
        internal_id = location.rstrip("/").rsplit("/", 1)[-1] if location else ""
        if not internal_id:
            internal_id = self._internal_id(client_id, {})
        state = self._with_secret(internal_id, spec, {"id": internal_id})
        log_event(
            logger,
            "connector_created",
            level=logging.DEBUG,
            kind=self.kind,
            registrar_id=spec.registrar_id,
            client_id=client_id,
        )
        return PushResult(client_id=client_id, remote_state=state)

    def get(self, client_id: str, remote_state: Mapping[str, Any]) -> RemoteClient:
        internal_id = self._internal_id(client_id, remote_state)
        return self._remote_client(self._request("GET", self._admin_url(f"/{internal_id}")).json())

    def update(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        """PUT the representation, then bring default client scopes in line.

        Keycloak ignores ``defaultClientScopes`` on a client PUT (it only reads them at create), so scope
        changes go through the ``default-client-scopes/{scopeId}`` sub-resource.
        """
        internal_id = self._internal_id(client_id, remote_state)
        self._request("PUT", self._admin_url(f"/{internal_id}"), json=self.representation_for(spec, client_id))
        self._sync_default_scopes(internal_id, spec.scopes)
        state = {**remote_state, "id": internal_id}
        log_event(
            logger,
            "connector_updated",
            level=logging.DEBUG,
            kind=self.kind,
            registrar_id=spec.registrar_id,
            client_id=client_id,
        )
        return PushResult(client_id=client_id, remote_state=state)

    def _sync_default_scopes(self, internal_id: str, wanted: list[str]) -> None:
        current = {
            scope["name"]: scope["id"]
            for scope in self._request("GET", self._admin_url(f"/{internal_id}/default-client-scopes")).json()
        }
        missing = [name for name in wanted if name not in current]
        if missing:
            realm_url = f"{self.base_url}/admin/realms/{quote(self.realm, safe='')}/client-scopes"
            available = {scope["name"]: scope["id"] for scope in self._request("GET", realm_url).json()}
            unknown = [name for name in missing if name not in available]
            if unknown:
                raise BadRequest(f"{self.kind}: realm {self.realm} has no client scopes {', '.join(unknown)}")
            for name in missing:
                self._request("PUT", self._admin_url(f"/{internal_id}/default-client-scopes/{available[name]}"))
        for name, scope_id in current.items():
            if name not in wanted:
                self._request("DELETE", self._admin_url(f"/{internal_id}/default-client-scopes/{scope_id}"))

    def disable(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        """``enabled: false`` on the full representation: Keycloak keeps the client, refuses its tokens."""
        internal_id = self._internal_id(client_id, remote_state)
        representation = self.representation_for(spec, client_id)
        representation["enabled"] = False
        self._request("PUT", self._admin_url(f"/{internal_id}"), json=representation)
        log_event(
            logger,
            "connector_disabled",
            level=logging.DEBUG,
            kind=self.kind,
            registrar_id=spec.registrar_id,
            client_id=client_id,
        )
        return PushResult(client_id=client_id, remote_state={**remote_state, "id": internal_id})

    def delete(self, client_id: str, remote_state: Mapping[str, Any]) -> None:
        try:
            internal_id = self._internal_id(client_id, remote_state)
            self._request("DELETE", self._admin_url(f"/{internal_id}"))
        except NotFound:
            log_event(logger, "connector_delete_already_gone", level=logging.DEBUG, kind=self.kind, client_id=client_id)
            return
        log_event(logger, "connector_deleted", level=logging.DEBUG, kind=self.kind, client_id=client_id)

    # -- usage ---------------------------------------------------------------------------------------------

    @property
    def can_report_usage(self) -> bool:
        return True

    def usage(self, *, since: datetime) -> Iterator[tuple[str, datetime]]:
        """Token issuance from the realm's admin events API: ``CLIENT_LOGIN`` events (a client-credentials grant),
        newest first, paged like :meth:`list`. Needs the realm's events switched on (*Realm settings → Events →
        User events*, ``CLIENT_LOGIN`` saved) and the admin service account's ``view-events`` role; with events
        off Keycloak answers an empty list and nothing is reported. Built-in clients and Registrar's own admin
        client are left out (they are not agents, and would otherwise show up as shadow clients)."""
        own = {self.secrets.get("admin_client_id")}
        url = f"{self.base_url}/admin/realms/{quote(self.realm, safe='')}/events"
        params: dict[str, Any] = {"type": "CLIENT_LOGIN", "dateFrom": since.astimezone(UTC).date().isoformat()}
        first = 0
        while True:
            page = self._request("GET", url, params={**params, "first": first, "max": PAGE_SIZE}).json()
            if not isinstance(page, list):
                raise ConnectorError(f"{self.kind}: the events listing is not a JSON array")
            for event in page:
                client_id, millis = event.get("clientId"), event.get("time")
                if not isinstance(client_id, str) or client_id in BUILTIN_CLIENT_IDS or client_id in own:
                    continue
                if not isinstance(millis, int) or isinstance(millis, bool):
                    continue
                when = datetime.fromtimestamp(millis / 1000, tz=UTC)
                if when >= since:
                    yield client_id, when
            if len(page) < PAGE_SIZE:
                return
            first += PAGE_SIZE

    def list(self) -> Iterator[RemoteClient]:
        first = 0
        while True:
            page = self._request("GET", self._admin_url(), params={"first": first, "max": PAGE_SIZE}).json()
            if not isinstance(page, list):
                raise ConnectorError(f"{self.kind}: client listing is not a JSON array")
            for representation in page:
                if representation.get("clientId") not in BUILTIN_CLIENT_IDS:
                    yield self._remote_client(representation)
            if len(page) < PAGE_SIZE:
                return
            first += PAGE_SIZE
