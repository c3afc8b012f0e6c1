"""Connectors that push Registrar's clients to identity providers.

One small interface (:class:`~inventory.connectors.base.BaseConnector`), one module per IdP kind, a
registry keyed by kind and shared error types. This package is plain Python: it imports no Django models,
so it can be unit-tested without a database and used from workers, commands and the inline 201 path alike.

Importing the package registers the built-in kinds.
"""

from inventory.connectors import dryrun, keycloak, rfc7591  # noqa: F401 - register the built-in kinds
from inventory.connectors.base import BaseConnector, ClientSpec, PushResult, RemoteClient, censor
from inventory.connectors.errors import (
    AccessDenied,
    AlreadyExists,
    BadRequest,
    ConnectorError,
    Misconfigured,
    NotFound,
    NotSupported,
    Transient,
    Unconfirmed,
)
from inventory.connectors.registry import available_kinds, build_connector, get_connector_class, register

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "BadRequest",
    "BaseConnector",
    "ClientSpec",
    "ConnectorError",
    "Misconfigured",
    "NotFound",
    "NotSupported",
    "PushResult",
    "RemoteClient",
    "Transient",
    "Unconfirmed",
    "available_kinds",
    "build_connector",
    "censor",
    "get_connector_class",
    "register",
]
