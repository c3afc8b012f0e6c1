"""The answers other than success, as exceptions carrying their HTTP status and RFC 7591 / RFC 6750 error body.

Raised by the services of this package and turned into JSON by ``approvals.oauth2.views``.
"""

from __future__ import annotations

ERR_INVALID_TOKEN = "invalid_token"
ERR_INVALID_METADATA = "invalid_client_metadata"


class IntakeError(Exception):
    """An answer other than success, with its HTTP status and RFC 7591/6750 error body."""

    status = 400

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}")

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class Unauthorized(IntakeError):
    """401: the bearer credential is missing, unknown, expired, used up or revoked (RFC 6750 §3.1)."""

    status = 401

    def __init__(self, description: str) -> None:
        super().__init__(ERR_INVALID_TOKEN, description)


class BadRequest(IntakeError):
    status = 400


class Unavailable(IntakeError):
    status = 503


__all__ = ["ERR_INVALID_METADATA", "ERR_INVALID_TOKEN", "BadRequest", "IntakeError", "Unauthorized", "Unavailable"]
