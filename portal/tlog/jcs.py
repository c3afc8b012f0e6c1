"""Canonical JSON in the style of RFC 8785 (JSON Canonicalization Scheme), for digests a verifier recomputes.

One JSON value has exactly one encoding: no whitespace; object members sorted by their names' UTF-16 code
units; strings in UTF-8 with only ``"``, ``\\`` and control characters escaped (``\\b \\f \\n \\r \\t``, else
``\\u00xx``); ``true``/``false``/``null``; numbers as ECMAScript's ``Number.prototype.toString`` writes them
(``4.50`` → ``4.5``, ``1E30`` → ``1e+30``, ``1.0`` → ``1``). One deliberate difference: an integer is written
with all its digits even beyond 2**53 (RFC 8785 would round it through a double), so two packs whose
integers differ never share a digest. NaN and infinities are not JSON and are refused.

``tools/verify_evidence.py`` carries its own copy (an auditor's verifier must not share code with what it
checks); tests hold both to the RFC's examples and to each other.
"""

from __future__ import annotations

import math
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any


def canonical_json(value: Any) -> bytes:
    """The canonical encoding of a JSON value (dict, list, str, int, float, bool, None) as UTF-8 bytes."""
    return "".join(_parts(value)).encode("utf-8")


def _parts(value: Any):
    if value is None:
        yield "null"
    elif value is True:
        yield "true"
    elif value is False:
        yield "false"
    elif isinstance(value, int):
        yield str(value)
    elif isinstance(value, float):
        yield number(value)
    elif isinstance(value, str):
        yield encode_basestring(value)  # escapes exactly '"', '\\' and U+0000..U+001F, as RFC 8785 §3.2.2.2
    elif isinstance(value, dict):
        if any(not isinstance(k, str) for k in value):
            raise TypeError("object member names must be strings")
        yield "{"
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                yield ","
            yield encode_basestring(key)
            yield ":"
            yield from _parts(value[key])
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _parts(item)
        yield "]"
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def number(value: float) -> str:
    """ECMAScript's Number.prototype.toString of a double (RFC 8785 §3.2.2.3): the shortest digits that read
    back as the same double (Python's repr finds them), laid out as ECMAScript does."""
    if not math.isfinite(value):
        raise ValueError("NaN and infinities are not JSON numbers")
    if value == 0:
        return "0"  # also -0
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)  # a finite value (checked above)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)  # value = digits × 10**exponent
    k, n = len(digits), len(digits) + exponent  # n: where the decimal point goes
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = f"0.{'0' * -n}{digits}"
    else:
        mantissa = digits[0] + (f".{digits[1:]}" if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text
