"""Generic OAuth 2.0 Dynamic Client Registration connector (kind ``rfc7591``): RFC 7591 + RFC 7592.

Config:
    ``registration_endpoint``  RFC 7591 registration endpoint (POST)
    ``issuer``                 the IdP's issuer identifier
    ``token_endpoint``         the IdP's token endpoint
    ``list_endpoint``          optional; a non-standard admin listing (our oidc-provider test IdP serves
                               ``GET /admin/clients`` -> ``{"clients": [...], "total": n}``, paged with
                               ``offset``/``limit``). Without it :meth:`Rfc7591Connector.list` raises
                               NotSupported: RFC 7591 has no list endpoint.
Secrets:
    ``initial_access_token``   RFC 7591 §3 initial access token for create
    ``admin_token``            optional; bearer token for ``list_endpoint`` (and for ``DELETE
                               {list_endpoint}/{client_id}``, used to remove a client whose registration
                               access token Registrar never got, e.g. a duplicate from a crashed create;
                               set config ``admin_delete: false`` if the IdP has no such route; and, with
                               config ``admin_update: true``, for ``PUT {list_endpoint}/{client_id}``: updating
                               an adopted client, whose registration access token Registrar never had)
    Without both ``list_endpoint`` and ``admin_token`` the connector cannot list (:attr:`can_list` is False):
    delivery then journals every call to the IdP, and a 401/403 on a management call is
    :class:`AccessDenied`, never "gone" (docs/connectors.md, "IdPs without a listing").
Remote state (per client, persist encrypted):
    ``registration_access_token``, ``registration_client_uri`` (RFC 7592 §3), ``client_secret`` if issued.

Correlation: create sends Registrar's id as a ``registrar_id`` metadata field (the IdP must keep unknown
fields; oidc-provider does with ``extraClientMetadata.properties``) and as ``software_id`` unless the spec
names one. Listing reads ``registrar_id`` back.

Tokens: RFC 7592 lets the IdP rotate the registration access token on any management call (oidc-provider
rotates on every PUT). Every :class:`PushResult` carries the current token; the caller must store it or lose
management of the client. Answers to GET are checked for a rotated token too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from inventory.connectors.base import (
    BaseConnector,
    ClientSpec,
    PushResult,
    RemoteClient,
    require_str,
)
from inventory.connectors.errors import AccessDenied, BadRequest, Misconfigured, NotFound, NotSupported
from inventory.connectors.registry import register
from portal.logs import log_event

logger = logging.getLogger(__name__)

# Fields an RFC 7592 update request MUST NOT carry (§2.2) and the IdP's bookkeeping we never send back.
_SERVER_FIELDS = frozenset(
    {
        "registration_access_token",
        "registration_client_uri",
        "client_secret_expires_at",
        "client_id_issued_at",
    }
)
LIST_PAGE_SIZE = 200


@register
class Rfc7591Connector(BaseConnector):
    kind: ClassVar[str] = "rfc7591"
    sensitive_params: ClassVar[frozenset[str]] = frozenset(
        {"initial_access_token", "admin_token", "registration_access_token", "client_secret"}
    )
    required_config: ClassVar[frozenset[str]] = frozenset({"registration_endpoint", "issuer", "token_endpoint"})
    required_secrets: ClassVar[frozenset[str]] = frozenset({"initial_access_token"})
    optional_secrets: ClassVar[frozenset[str]] = frozenset({"admin_token"})

    @property
    def issuer(self) -> str:
        return self.config["issuer"]

    @property
    def token_endpoint(self) -> str:
        return self.config["token_endpoint"]

    # -- HTTP ------------------------------------------------------------------------------------------

    def _request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        *,
        bearer: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ):
        """Every call to the IdP: bearer auth (initial, registration or admin token) + JSON."""
        headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
        return super()._request(method, url, headers=headers, json=json, params=params, secret_values=[bearer])

    # -- metadata mapping ------------------------------------------------------------------------------

    @staticmethod
    def metadata_for(spec: ClientSpec) -> dict[str, Any]:
        """RFC 7591 §2 client metadata for ``spec``.

        ``expires_at`` is not sent: RFC 7591 has no client lifetime (``client_secret_expires_at`` is about
        the secret), so Registrar enforces expiry itself by disabling the client. ``extra`` is merged last
        and may add IdP-specific metadata, but cannot override the correlation marker.
        """
        metadata: dict[str, Any] = {
            "client_name": spec.client_name,
            "grant_types": list(spec.grant_types),
            "response_types": list(spec.response_types),
            "redirect_uris": list(spec.redirect_uris),
            "token_endpoint_auth_method": spec.token_endpoint_auth_method,
            "software_id": spec.software_id or spec.registrar_id,
        }
        if spec.scopes:
            metadata["scope"] = " ".join(spec.scopes)
        if spec.jwks is not None:
            metadata["jwks"] = spec.jwks
        if spec.jwks_uri is not None:
            metadata["jwks_uri"] = spec.jwks_uri
        if spec.software_version is not None:
            metadata["software_version"] = spec.software_version
        metadata.update(spec.extra)
        metadata["registrar_id"] = spec.registrar_id
        if spec.client_id:  # a CIMD client's URL: an IdP that lets the registrant choose its id honours it
            metadata["registrar_client_id"] = spec.client_id
        return metadata

    def _remote_client(self, body: Mapping[str, Any]) -> RemoteClient:
        scope = body.get("scope") or ""
        metadata = {key: value for key, value in body.items() if key not in _SERVER_FIELDS and key != "client_secret"}
        registrar_id = body.get("registrar_id")
        return RemoteClient(
            client_id=require_str(body.get("client_id"), "client_id"),
            registrar_id=registrar_id if isinstance(registrar_id, str) and registrar_id else None,
            # RFC 7591 has no "disabled": a client that can use no grant cannot get tokens.
            enabled=bool(body.get("grant_types", ["authorization_code"])),
            scopes=scope.split() if isinstance(scope, str) else [],
            metadata=metadata,
        )

    def _state_from(self, body: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        state = dict(previous or {})
        for key in ("registration_access_token", "registration_client_uri", "client_secret"):
            if body.get(key):
                state[key] = body[key]
        return state

    def _management(self, client_id: str, remote_state: Mapping[str, Any]) -> tuple[str, str]:
        token = remote_state.get("registration_access_token")
        uri = remote_state.get("registration_client_uri")
        if not token or not uri:
            raise Misconfigured(
                f"{self.kind}: no registration access token/URI stored for client {client_id}; "
                "it cannot be managed over RFC 7592"
            )
        return uri, token

    @property
    def can_list(self) -> bool:
        return bool(self.config.get("list_endpoint") and self.secrets.get("admin_token"))

    def _management_request(self, method: str, client_id: str, remote_state: Mapping[str, Any], *, json: Any = None):
        """An RFC 7592 call. RFC 7592 §3 answers an unknown client with 401, not 404 — and a stale or revoked
        registration access token gets the same 401 (or a 403).

        With an admin listing we ask it which one it is: absent → NotFound (gone), present → AccessDenied.
        Without one nobody can tell, so it is AccessDenied: "already gone" would be a guess, and a wrong guess
        leaves a live client that Registrar believes deleted.
        """
        uri, token = self._management(client_id, remote_state)
        try:
            return self._request(method, uri, bearer=token, json=json)
        except BadRequest as exc:
            if exc.status_code not in (401, 403):
                raise
            if self.can_list:
                if any(remote.client_id == client_id for remote in self.list()):
                    raise AccessDenied(
                        f"{self.kind}: the IdP refused the registration access token for {client_id} "
                        f"({exc.status_code}) but still lists the client: a stale token, or a revoked one",
                        status_code=exc.status_code,
                        detail=exc.detail,
                    ) from exc
                raise NotFound(
                    f"{self.kind}: client {client_id} is unknown to the IdP",
                    status_code=exc.status_code,
                    detail=exc.detail,
                ) from exc
            raise AccessDenied(
                f"{self.kind}: the IdP refused the registration access token for {client_id} ({exc.status_code}); "
                "it offers no listing, so Registrar cannot tell a deleted client from a stale or revoked token",
                status_code=exc.status_code,
                detail=exc.detail,
            ) from exc

    def check_credentials(self) -> list[str]:
        """The initial access token, by a registration the IdP must refuse; the admin token, by one list page.

        RFC 7591 has no "who am I" call, so the token is shown with metadata no server can accept (an
        authentication method nobody defines): an IdP checks the token first (401/403 when it refuses it), then
        answers ``400 invalid_client_metadata``. Should an IdP register the client all the same, it is deleted
        again at once with its own registration access token (RFC 7592).
        """
        proven: list[str] = []
        try:
            response = self._request(
                "POST",
                self.config["registration_endpoint"],
                bearer=self.secrets["initial_access_token"],
                json={
                    "client_name": "registrar connection test (refuse me)",
                    "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "registrar_connection_test_invalid",
                },
            )
        except AccessDenied:
            raise
        except BadRequest as exc:
            if exc.status_code in (401, 403):
                raise AccessDenied(
                    f"{self.kind}: the IdP refused the initial access token ({exc.status_code})",
                    status_code=exc.status_code,
                    detail=exc.detail,
                ) from exc
            proven.append(f"initial_access_token: accepted (the IdP then refused the test metadata: {exc.status_code})")
        else:
            body = response.json()
            client_id = body.get("client_id")
            if client_id:
                self.delete(str(client_id), self._state_from(body))
            proven.append("initial_access_token: accepted (the IdP registered the test client; it was deleted)")
        if self.config.get("list_endpoint") and self.secrets.get("admin_token"):
            self._request("GET", self.config["list_endpoint"], bearer=self.secrets["admin_token"], params={"limit": 1})
            proven.append("admin_token: the IdP's client listing answered")
        return proven

    # -- operations ------------------------------------------------------------------------------------

    def create(self, spec: ClientSpec) -> PushResult:
        if not spec.enabled:
            raise NotSupported(f"{self.kind}: RFC 7591 cannot create a disabled client")
        response = self._request(
            "POST",
            self.config["registration_endpoint"],
            bearer=self.secrets["initial_access_token"],
            json=self.metadata_for(spec),
        )
        body = response.json()
        client_id = require_str(body.get("client_id"), "client_id")
        state = self._state_from(body)
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
        return self._remote_client(self._management_request("GET", client_id, remote_state).json())

    def read(self, client_id: str, remote_state: Mapping[str, Any]) -> tuple[RemoteClient, dict[str, Any]]:
        """:meth:`get` plus the remote state to store, for IdPs that rotate the token on reads too."""
        body = self._management_request("GET", client_id, remote_state).json()
        return self._remote_client(body), self._state_from(body, remote_state)

    def update(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        """Full replacement (RFC 7592 §2.2): every field we manage is sent, with ``client_id``.

        A client without a registration access token (one Registrar adopted: found at the IdP, never registered
        through Registrar) is replaced through the admin API's ``PUT {list_endpoint}/{client_id}`` when the
        connection opts in with config ``admin_update: true``; otherwise it cannot be updated (Misconfigured).
        """
        metadata = {"client_id": client_id, **self.metadata_for(spec)}
        if not remote_state.get("registration_access_token") and self._can_admin_update():
            answer = self._request(
                "PUT",
                f"{self.config['list_endpoint'].rstrip('/')}/{client_id}",
                bearer=self.secrets["admin_token"],
                json=metadata,
            ).json()
            if answer.get("client_id") not in (None, client_id):
                raise BadRequest(f"{self.kind}: IdP answered an update of {client_id} with {answer.get('client_id')}")
            log_event(
                logger, "connector_updated", level=logging.DEBUG, kind=self.kind, client_id=client_id, via="admin"
            )
            return PushResult(client_id=client_id, remote_state=dict(remote_state))
        if remote_state.get("client_secret"):
            metadata["client_secret"] = remote_state["client_secret"]
        body = self._management_request("PUT", client_id, remote_state, json=metadata).json()
        if body.get("client_id") not in (None, client_id):
            raise BadRequest(f"{self.kind}: IdP answered an update of {client_id} with client {body.get('client_id')}")
        state = self._state_from(body, remote_state)
        log_event(
            logger,
            "connector_updated",
            level=logging.DEBUG,
            kind=self.kind,
            registrar_id=spec.registrar_id,
            client_id=client_id,
            token_rotated=state.get("registration_access_token") != remote_state.get("registration_access_token"),
        )
        return PushResult(client_id=client_id, remote_state=state)

    def disable(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        """RFC 7591/7592 have no "disabled" state, so disabling **deletes** the client.

        The alternative, a PUT with empty ``grant_types``, stops new tokens but leaves tokens already
        issued valid until they expire, and many IdPs refuse an empty list. Deleting stops both (our test IdP
        revokes a deleted client's tokens). Re-enabling is therefore a new create with a new ``client_id``;
        the result says so with ``deleted=True`` and an empty remote state.
        """
        self.delete(client_id, remote_state)
        return PushResult(client_id=client_id, remote_state={}, deleted=True)

    def delete(self, client_id: str, remote_state: Mapping[str, Any]) -> None:
        if not remote_state.get("registration_access_token") and self._can_admin_delete():
            # No RFC 7592 token (a duplicate found by its correlation marker, or an adopted client):
            # use the admin API's ``DELETE {list_endpoint}/{client_id}`` where the IdP offers one.
            try:
                self._request(
                    "DELETE",
                    f"{self.config['list_endpoint'].rstrip('/')}/{client_id}",
                    bearer=self.secrets["admin_token"],
                )
            except NotFound:
                log_event(
                    logger, "connector_delete_already_gone", level=logging.DEBUG, kind=self.kind, client_id=client_id
                )
                return
            log_event(
                logger, "connector_deleted", level=logging.DEBUG, kind=self.kind, client_id=client_id, via="admin"
            )
            return
        try:
            self._management_request("DELETE", client_id, remote_state)
        except NotFound:
            log_event(logger, "connector_delete_already_gone", level=logging.DEBUG, kind=self.kind, client_id=client_id)
            return
        log_event(logger, "connector_deleted", level=logging.DEBUG, kind=self.kind, client_id=client_id)

    def _can_admin_update(self) -> bool:
        """Opt-in (config ``admin_update``): an IdP without that route would answer 404, read as "gone"."""
        return bool(
            self.config.get("list_endpoint")
            and self.config.get("admin_update", False)
            and self.secrets.get("admin_token")
        )

    def _can_admin_delete(self) -> bool:
        return bool(
            self.config.get("list_endpoint")
            and self.config.get("admin_delete", True)
            and self.secrets.get("admin_token")
        )

    def list(self) -> Iterator[RemoteClient]:
        endpoint = self.config.get("list_endpoint")
        token = self.secrets.get("admin_token")
        if not endpoint or not token:
            raise NotSupported(f"{self.kind}: RFC 7591 has no list endpoint and no list_endpoint/admin_token is set")
        offset = 0
        while True:
            body = self._request(
                "GET", endpoint, bearer=token, params={"offset": offset, "limit": LIST_PAGE_SIZE}
            ).json()
            clients = body.get("clients", []) if isinstance(body, dict) else body
            for item in clients:
                yield self._remote_client(item)
            offset += len(clients)
            total = body.get("total") if isinstance(body, dict) else None
            if not clients or len(clients) < LIST_PAGE_SIZE or (isinstance(total, int) and offset >= total):
                return
