"""``storable``: a copy of agent-supplied data that PostgreSQL's text and jsonb columns accept."""

from __future__ import annotations

import math
from typing import Any


def storable(value: Any, *, max_str: int | None = None) -> Any:
    """A copy safe for PostgreSQL text/jsonb: NUL characters (which it refuses) become U+FFFD. (Unpaired
    surrogates never get this far: request bodies and statements are parsed by portal.jsonbody.)"""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        return value[:max_str] if max_str else value
    if isinstance(value, dict):
        return {storable(k if isinstance(k, str) else str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
