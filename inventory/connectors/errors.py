"""Errors every connector raises, whatever the IdP.

Callers (the outbox worker, the inline 201 path, reconciliation) branch on these types only:
retry :class:`Transient` with backoff; adopt on :class:`AlreadyExists`; recreate (or treat as done, for a
delete) on :class:`NotFound`; surface :class:`BadRequest` (including :class:`AccessDenied`) and
:class:`Unconfirmed` to a person; never retry :class:`NotSupported` or :class:`Misconfigured`.
"""

from __future__ import annotations

from typing import Any


class ConnectorError(Exception):
    """Base class; ``status_code`` and ``detail`` (the IdP's error body, censored) come from HTTP answers."""

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.detail = detail

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.detail:
            parts.append(f"detail={self.detail!r}")
        return " ".join(parts)


class Transient(ConnectorError):
    """Worth retrying later: timeouts, connection errors, 429 and 5xx answers.

    ``retry_after`` is the IdP's ``Retry-After`` in seconds when it sent one. ``reached_idp`` is False only
    when the request certainly did not take effect (no connection was made, or the IdP answered 429/503,
    which refuse the request unprocessed); a timeout, a dropped connection or another 5xx may have come
    after the IdP acted, so they leave it True.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, reached_idp: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.reached_idp = reached_idp


class NotFound(ConnectorError):
    """The client does not exist at the IdP (404/410, or RFC 7592's 401 for an unknown client)."""


class AlreadyExists(ConnectorError):
    """A client with the same identity already exists at the IdP (409): adopt it.

    ``client_id`` names the existing client when the connector knows it (ids chosen by Registrar).
    """

    def __init__(self, message: str, *, client_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.client_id = client_id


class BadRequest(ConnectorError):
    """The IdP refused the request as given (400/401/403/422 and other 4xx); retrying will not help."""


class AccessDenied(BadRequest):
    """The IdP refused the credential of a management call (401/403) and cannot tell us whether the client
    still exists: the stored token may be stale or revoked. Never "already gone": a person must look."""


class Unconfirmed(ConnectorError):
    """An earlier call may have taken effect at an IdP that offers no way to find out (no client listing):
    repeating it could leave a duplicate nobody can find, so a person decides."""


class NotSupported(ConnectorError):
    """The operation has no equivalent for this kind of IdP (e.g. listing clients over plain RFC 7591)."""


class Misconfigured(ConnectorError):
    """The connection's configuration or secrets are missing or malformed."""
