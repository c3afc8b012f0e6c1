"""The connector interface, the data it exchanges, and the HTTP plumbing every connector shares.

A connector turns a :class:`ClientSpec` (what Registrar wants to exist) into calls on one IdP, and reads
back :class:`RemoteClient` records (what does exist). Everything a connector must remember between calls
for one client (a rotated registration access token, a management URI, an issued secret) comes back in
:attr:`PushResult.remote_state`; the caller stores it encrypted and hands it back on the next call.
Connectors are stateless otherwise, so any worker can deliver any outbox entry.

All HTTP goes through :meth:`BaseConnector._request`, which maps answers onto the shared error types
(:mod:`inventory.connectors.errors`) and logs one censored ``key=value`` line per request
(:func:`portal.logs.log_event`).
"""

from __future__ import annotations

import abc
import builtins
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

import httpx

from inventory.connectors import telemetry
from inventory.connectors.errors import (
    AlreadyExists,
    BadRequest,
    ConnectorError,
    Misconfigured,
    NotFound,
    Transient,
)
from portal.censor import censor, is_sensitive_key
from portal.circuit import call_timeout
from portal.logs import log_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientSpec:
    """What Registrar wants to exist at the IdP for one client.

    ``registrar_id`` is Registrar's opaque id for the client; connectors send it as the correlation marker
    at create so :meth:`BaseConnector.list` can tell Registrar's clients from shadow ones.
    """

    registrar_id: str
    client_name: str
    #: The client_id Registrar asks the IdP to use, or None to let the connector choose. A Client ID Metadata
    #: Document client's client_id is its document URL (docs/cimd.md): connectors that can set the id use it.
    client_id: str | None = None
    scopes: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=lambda: ["client_credentials"])
    response_types: list[str] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    token_endpoint_auth_method: str = "private_key_jwt"
    jwks: dict | None = None
    jwks_uri: str | None = None
    enabled: bool = True
    expires_at: datetime | None = None
    software_id: str | None = None
    software_version: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteClient:
    """A client as the IdP reports it. ``registrar_id`` is None for clients Registrar did not create."""

    client_id: str
    registrar_id: str | None
    enabled: bool
    scopes: list[str]
    metadata: dict


@dataclass(frozen=True)
class PushResult:
    """The outcome of create/update/disable.

    ``remote_state`` is what the caller must persist (encrypted) and pass back next time, replacing the old
    one entirely: e.g. ``registration_access_token`` (rotated on every RFC 7592 update),
    ``registration_client_uri``, and ``client_secret`` if the IdP issued one. ``deleted`` is True when the
    operation removed the client at the IdP (RFC 7591 has no "disabled"), so re-enabling means creating.
    """

    client_id: str
    remote_state: dict = field(default_factory=dict)
    deleted: bool = False


class BaseConnector(abc.ABC):
    """One IdP connection. Subclasses set ``kind`` and implement the six operations.

    ``config`` holds endpoints and options (not secret); ``secrets`` holds credentials (decrypted by the
    caller, never logged). ``transport`` replaces httpx's network transport, for tests.
    """

    kind: ClassVar[str]
    #: Which connection this connector talks to, for metrics and logs (``IdPConnection.name``; the kind until set).
    label: str = ""
    #: Parameter names (config, secrets, remote_state, metadata) censored in logs and audit payloads,
    #: in addition to anything :func:`censor` already recognises by name.
    sensitive_params: ClassVar[frozenset[str]] = frozenset()
    required_config: ClassVar[frozenset[str]] = frozenset()
    required_secrets: ClassVar[frozenset[str]] = frozenset()
    #: Credentials the connector uses when present (the admin's secrets form offers them besides the required ones).
    optional_secrets: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        secrets: Mapping[str, Any],
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        missing = sorted(key for key in self.required_config if not config.get(key)) + sorted(
            key for key in self.required_secrets if not secrets.get(key)
        )
        if missing:
            raise Misconfigured(f"{self.kind} connector is missing {', '.join(missing)}")
        self.config = dict(config)
        self.secrets = dict(secrets)
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    # -- the interface -----------------------------------------------------------------------------

    @abc.abstractmethod
    def create(self, spec: ClientSpec) -> PushResult:
        """Create the client; AlreadyExists if the IdP already has one with this identity."""

    @abc.abstractmethod
    def get(self, client_id: str, remote_state: Mapping[str, Any]) -> RemoteClient:
        """Read one client; NotFound if it is gone."""

    @abc.abstractmethod
    def update(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        """Make the client match ``spec``; NotFound if it is gone (the caller recreates)."""

    @abc.abstractmethod
    def disable(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        """Stop the client from obtaining or using tokens."""

    @abc.abstractmethod
    def delete(self, client_id: str, remote_state: Mapping[str, Any]) -> None:
        """Remove the client. A client that is already gone counts as deleted (no NotFound)."""

    @abc.abstractmethod
    def list(self) -> Iterator[RemoteClient]:
        """Every client the IdP holds (Registrar's and others), for reconciliation."""

    def usage(self, *, since: datetime) -> Iterator[tuple[str, datetime]]:
        """``(client id at the IdP, when it obtained a token)`` as the IdP recorded it since ``since``, for
        ``inventory.usage.usage_pull``. Only connectors whose IdP can tell override this (``can_report_usage``)."""
        raise NotImplementedError(f"{self.kind} cannot report client usage")

    @property
    def can_report_usage(self) -> bool:
        return False

    @property
    def can_list(self) -> bool:
        """Whether :meth:`list` works here. Without it a call whose answer is lost cannot be looked up
        afterwards, so delivery journals every call to such an IdP (``inventory.outbox.journal``)."""
        return True

    @property
    @abc.abstractmethod
    def issuer(self) -> str:
        """The IdP's issuer identifier, told to agents with their credentials."""

    @property
    @abc.abstractmethod
    def token_endpoint(self) -> str:
        """Where the agent's credentials work."""

    # -- shared plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def censor(self, value: Any, *, remote_state: Mapping[str, Any] | None = None) -> Any:
        """:func:`censor` that also knows this connection's sensitive parameters and secret values."""
        secret_values = [v for v in self.secrets.values() if isinstance(v, str)]
        if remote_state:
            secret_values += [
                v for k, v in remote_state.items() if isinstance(v, str) and is_sensitive_key(k, self.sensitive_params)
            ]
        return censor(value, extra_keys=self.sensitive_params, secret_values=secret_values)

    def _request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        secret_values: Iterable[str] = (),
    ) -> httpx.Response:
        """Send one request and map failures onto the shared error types.

        Returns the response for any 2xx/3xx. Raises :class:`Transient` for timeouts, connection errors,
        429 and 5xx; :class:`NotFound` for 404/410; :class:`AlreadyExists` for 409; :class:`BadRequest`
        for other 4xx, carrying the IdP's error body with secrets censored. ``secret_values`` are extra
        strings (e.g. a per-client token) to scrub from that body.
        """
        started = time.monotonic()
        # Inside an inline wait (portal.circuit.within) every request gets what is left of the request's total
        # budget, so a token fetch plus a registration, or a retry, never take a budget each.
        timeout = call_timeout(self.timeout)
        if timeout <= 0:
            raise Transient(f"{self.kind}: {method} {url} not sent: the inline budget is spent", reached_idp=False)
        extra: dict[str, Any] = {} if timeout == self.timeout else {"timeout": timeout}
        try:
            response = self._http.request(method, url, headers=headers, json=json, data=data, params=params, **extra)
        except httpx.TimeoutException as exc:
            self._log_request(method, url, started, error=type(exc).__name__)
            raise Transient(
                f"{self.kind}: {method} {url} timed out after {round(timeout, 3)}s",
                reached_idp=not isinstance(exc, _NOT_SENT),
            ) from exc
        except httpx.TransportError as exc:
            self._log_request(method, url, started, error=type(exc).__name__)
            raise Transient(
                f"{self.kind}: {method} {url} failed: {type(exc).__name__}: {exc}",
                reached_idp=not isinstance(exc, _NOT_SENT),
            ) from exc
        except httpx.InvalidURL as exc:
            raise Misconfigured(f"{self.kind}: invalid URL {url!r}: {exc}") from exc

        status = response.status_code
        self._log_request(method, url, started, status=status)
        if status < 400:
            return response

        detail = self._error_detail(response, secret_values)
        message = f"{self.kind}: {method} {url} answered {status}"
        if status == 429 or status >= 500:
            raise Transient(
                message,
                status_code=status,
                detail=detail,
                retry_after=_retry_after(response),
                reached_idp=status not in _REFUSED_UNPROCESSED,
            )
        if status in (404, 410):
            raise NotFound(message, status_code=status, detail=detail)
        if status == 409:
            raise AlreadyExists(message, status_code=status, detail=detail)
        raise BadRequest(message, status_code=status, detail=detail)

    def _error_detail(self, response: httpx.Response, secret_values: Iterable[str]) -> Any:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        scrub = [v for v in self.secrets.values() if isinstance(v, str)] + list(secret_values)
        return censor(body, extra_keys=self.sensitive_params, secret_values=scrub)

    def probe(self) -> None:
        """Is the IdP reachable? Any HTTP answer below 500 from its OpenID/OAuth discovery document (or the
        issuer URL) counts; :class:`Transient` when it times out, refuses or answers 5xx. No credentials are sent,
        and the call is not counted in the IdP call metrics (it measures reachability, not Registrar's work)."""
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = self._http.get(url)
        except httpx.TimeoutException as exc:
            raise Transient(f"{self.kind}: GET {url} timed out after {self.timeout}s") from exc
        except httpx.TransportError as exc:
            raise Transient(f"{self.kind}: GET {url} failed: {type(exc).__name__}: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise Misconfigured(f"{self.kind}: invalid URL {url!r}: {exc}") from exc
        if response.status_code >= 500:
            raise Transient(f"{self.kind}: GET {url} answered {response.status_code}", status_code=response.status_code)

    def check_credentials(self) -> builtins.list[str]:  # builtins: the class has a method called list
        """Use the stored credentials once, changing nothing at the IdP, and say what was proven.

        Returns one line per credential that the IdP accepted; raises the shared error types when it refused
        one (messages and details censored like every connector error). The default proves nothing: a kind
        with credentials overrides it (Django admin's "test connection", ``manage.py set_idp_secret --test``).
        """
        return []

    def _log_request(self, method: str, url: str, started: float, **fields: Any) -> None:
        # Successful calls are DEBUG, like the connectors' own success events (connector_created, ...): the
        # outbox writes the INFO line for each delivered change (outbox_delivered), from the thread that
        # records it, so IdP calls in flight on a worker's pool do not queue on the log handler's lock.
        # Failures stay loud.
        status = fields.get("status", 0)
        elapsed = time.monotonic() - started
        telemetry.observe_idp_call(
            connection=self.label or self.kind,
            kind=self.kind,
            method=method,
            seconds=elapsed,
            status=status,
            error=fields.get("error") or "",
        )
        if fields.get("error") or status >= 500:
            level = logging.WARNING
        elif status >= 400:
            level = logging.INFO
        else:
            level = logging.DEBUG
        log_event(
            logger,
            "connector_request",
            level=level,
            extra_keys=self.sensitive_params,
            kind=self.kind,
            method=method,
            url=url,
            elapsed_ms=round(elapsed * 1000, 1),
            **fields,
        )


# Failures that prove the request never took effect: no connection was made (refused, unresolvable, no free
# connection in the pool), or the IdP turned it away before processing it (429 Too Many Requests, 503
# Unavailable). Everything else — a read timeout, a dropped connection, another 5xx — may come after the IdP
# acted on the request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_REFUSED_UNPROCESSED = frozenset({429, 503})


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare from IdPs; the caller's own backoff applies


def require_str(value: Any, what: str) -> str:
    """A non-empty string from an IdP answer, or a ConnectorError naming what was missing."""
    if not isinstance(value, str) or not value:
        raise ConnectorError(f"IdP answer has no {what}")
    return value
