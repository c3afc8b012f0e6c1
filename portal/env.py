"""Typed readers for environment variables.

Every setting Registrar takes from the environment goes through these helpers so that a
malformed value fails at start-up with ``ImproperlyConfigured`` naming the variable, instead of
surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, overload

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@overload
def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str: ...
@overload
def env_str(name: str, default: None = None, *, environ: Mapping[str, str] | None = None) -> str | None: ...
def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    return default if value is None else value.strip()


def env_required(name: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = env_str(name, environ=environ)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set")
    return value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = env_str(name, environ=environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = env_str(name, environ=environ)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {number}")
    return number


def env_float(
    name: str, default: float, *, minimum: float | None = None, environ: Mapping[str, str] | None = None
) -> float:
    value = env_str(name, environ=environ)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    value = env_str(name, environ=environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


_RATE = re.compile(r"^(\d+)/(\d*)([smhd])$")


def env_rate(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    """A rate such as ``10/m`` or ``5/15m`` (count per duration, units s, m, h, d), normalised to
    ``count/<n><unit>``: the form allauth's rate limits take."""
    value = (env_str(name, environ=environ) or default).replace(" ", "")
    match = _RATE.match(value)
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ImproperlyConfigured(f"{name} must be a rate like 10/m or 5/15m (units s, m, h, d), got {value!r}")
    return f"{int(match.group(1))}/{match.group(2) or 1}{match.group(3)}"


def parse_database_url(url: str, name: str = "DATABASE_URL") -> dict[str, Any]:
    """Parse ``DATABASE_URL`` (or ``name``) strictly: only PostgreSQL and SQLite are supported."""
    import dj_database_url

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(
            f"{name} must start with postgres:// or sqlite://, got scheme {scheme or '(none)'!r}"
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises several types for malformed URLs
        raise ImproperlyConfigured(f"{name} is malformed: {exc}")
    if scheme != "sqlite":
        if not config.get("NAME"):
            raise ImproperlyConfigured(f"{name} must name a database, e.g. postgres://user@host:5432/registrar")
        port = config.get("PORT")
        if port is not None and port != "":
            try:
                int(port)
            except (TypeError, ValueError):
                raise ImproperlyConfigured(f"{name} has a non-numeric port {port!r}")
    return dict(config)


def parse_redis_url(url: str, name: str = "REDIS_URL") -> str:
    if not (url.startswith("redis://") or url.startswith("rediss://") or url.startswith("unix://")):
        raise ImproperlyConfigured(f"{name} must start with redis://, rediss:// or unix://, got {url!r}")
    return url


def parse_networks(values: list[str], name: str) -> tuple:
    """CIDR networks (``127.0.0.0/8``, ``10.0.0.0/8``, ``::1/128``; a bare address is a /32 or /128)."""
    import ipaddress

    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name} must list IP networks in CIDR form (e.g. 10.0.0.0/8), got {value!r}")
    return tuple(networks)
