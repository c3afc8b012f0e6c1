"""Connector classes by IdP kind (``IdPConnection.kind``).

Modules register their class with :func:`register`; importing :mod:`inventory.connectors` loads the
built-in ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from inventory.connectors.base import BaseConnector
from inventory.connectors.errors import Misconfigured

_REGISTRY: dict[str, type[BaseConnector]] = {}

C = TypeVar("C", bound=type[BaseConnector])


def register(cls: C) -> C:
    """Class decorator: make ``cls`` available under ``cls.kind``. A kind can be registered once."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} must set a non-empty `kind`")
    existing = _REGISTRY.get(kind)
    if existing is not None and existing is not cls:
        raise ValueError(f"connector kind {kind!r} is already registered by {existing.__qualname__}")
    _REGISTRY[kind] = cls
    return cls


def get_connector_class(kind: str) -> type[BaseConnector]:
    _load_builtins()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise Misconfigured(f"unknown connector kind {kind!r}; available: {', '.join(available_kinds())}") from None


def build_connector(
    kind: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    timeout: float = 10.0,
    *,
    transport: httpx.BaseTransport | None = None,
) -> BaseConnector:
    return get_connector_class(kind)(config=config, secrets=secrets, timeout=timeout, transport=transport)


def available_kinds() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Importing the package imports every built-in module, which registers them.
    import inventory.connectors  # noqa: F401
