"""The exceptions approvals' services raise; interfaces map them onto messages and HTTP statuses."""

from __future__ import annotations


class ServiceError(Exception):
    """A business rule refused the action; the message is safe to show to the user."""


class TokenError(ServiceError):
    pass


# Separation of duties and four-eyes live here, never in views: the HTML queue, the API and any
# command call these functions and map the exception classes onto HTTP statuses.


class DecisionError(ServiceError):
    """A decision was refused. ``status_code`` is the HTTP status interfaces should answer with."""

    status_code = 400


class DecisionForbidden(DecisionError):
    """This principal may not decide this request (role, separation of duties, non-human)."""

    status_code = 403


class DecisionConflict(DecisionError):
    """The request is no longer pending, or this approver already decided it."""

    status_code = 409


class DecisionInvalid(DecisionError):
    """The decision itself is malformed: missing reason, widened scopes or TTL."""

    status_code = 400
