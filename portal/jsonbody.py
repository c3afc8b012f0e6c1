"""Strict JSON for request bodies: I-JSON (RFC 7493), not everything Python's ``json`` accepts.

Python's parser also takes ``NaN``/``Infinity``, numbers that overflow a double and ``\\u`` escapes naming half
a surrogate pair. None of these can be stored (PostgreSQL's jsonb refuses the first two, and no UTF-8 text
holds an unpaired surrogate), so they would surface as a database error, a 500, far from the input. Here
they are refused at the door, with a reason, as invalid JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Only such an escape can put a surrogate into a parsed string (a valid pair decodes to one character), so
# almost every body is cleared by this byte search alone.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads(raw: bytes | str) -> Any:
    """Parse ``raw``; ValueError (its message says why, without echoing the input) if it is not I-JSON."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    # UnicodeDecodeError and json.JSONDecodeError are ValueErrors: they propagate as they are
    data = raw.encode() if isinstance(raw, str) else raw
    if _SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError("a \\u escape names an unpaired surrogate (RFC 7493 §2.1)") from None
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is out of range")
    return value
