"""Canonical JSON (RFC 8785 style): Registrar's encoder and the stand-alone verifier's copy, held to the RFC's
examples and to each other — the evidence pack's digest is only as good as both agreeing byte for byte."""

from __future__ import annotations

import importlib.util
import json
import random
import struct
from pathlib import Path

import pytest

from portal.tlog.jcs import canonical_json, number

TOOL = Path(__file__).resolve().parents[2] / "tools" / "verify_evidence.py"


def _tool():
    spec = importlib.util.spec_from_file_location("verify_evidence", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()

# RFC 8785 Appendix B: IEEE 754 doubles (hex) and their canonical form.
NUMBERS = {
    "0000000000000000": "0",
    "8000000000000000": "0",
    "0000000000000001": "5e-324",
    "8000000000000001": "-5e-324",
    "7fefffffffffffff": "1.7976931348623157e+308",
    "ffefffffffffffff": "-1.7976931348623157e+308",
    "4340000000000000": "9007199254740992",
    "c340000000000000": "-9007199254740992",
    "4430000000000000": "295147905179352830000",
    "44b52d02c7e14af5": "9.999999999999997e+22",
    "44b52d02c7e14af6": "1e+23",
    "44b52d02c7e14af7": "1.0000000000000001e+23",
    "444b1ae4d6e2ef4e": "999999999999999700000",
    "444b1ae4d6e2ef4f": "999999999999999900000",
    "444b1ae4d6e2ef50": "1e+21",
    "3eb0c6f7a0b5ed8c": "9.999999999999997e-7",
    "3eb0c6f7a0b5ed8d": "0.000001",
    "41b3de4355555553": "333333333.3333332",
    "41b3de4355555554": "333333333.33333325",
    "41b3de4355555555": "333333333.3333333",
    "41b3de4355555556": "333333333.3333334",
    "41b3de4355555557": "333333333.33333343",
    "becbf647612f3696": "-0.0000033333333333333333",
    "43143ff3c1cb0959": "1424953923781206.2",
}


def _double(hex_bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_bits))[0]


@pytest.mark.parametrize(("bits", "expected"), NUMBERS.items())
def test_numbers_as_rfc_8785_appendix_b(bits, expected):
    assert number(_double(bits)) == expected
    assert tool.es_number(_double(bits)) == expected


# RFC 8785 §3.2.2 and §3.2.3: the worked example and the sorting example.
EXAMPLE = (
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
    '"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals": [null, true, false]}'
)
EXAMPLE_CANONICAL = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)
SORTING = (
    '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",'
    ' "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control", "\\u00f6": "Latin Small Letter O With Diaeresis"}'
)


@pytest.mark.parametrize("encode", [canonical_json, tool.jcs], ids=["registrar", "verifier"])
def test_the_rfc_examples(encode):
    assert encode(json.loads(EXAMPLE)).decode() == EXAMPLE_CANONICAL
    # members sorted by UTF-16 code units: U+1F600 (a surrogate pair, D83D…) sorts before U+FB33
    assert list(json.loads(encode(json.loads(SORTING)))) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "😀", "\ufb33"]


def test_integers_keep_every_digit_and_non_numbers_are_refused():
    for value in (2**53 + 1, -(2**70), 0, 7):
        assert canonical_json(value) == tool.jcs(value) == str(value).encode()
    with pytest.raises(ValueError):
        canonical_json(float("nan"))
    with pytest.raises(tool.Invalid):
        tool.jcs(float("inf"))


def _has_big_integral_float(v) -> bool:
    # 1.9683336390372475e+18 is written 1968333639037247500 (as ECMAScript does), which reads back as an integer
    if isinstance(v, float):
        return v.is_integer() and abs(v) >= 2**53
    if isinstance(v, dict):
        v = list(v.values())
    return isinstance(v, list) and any(_has_big_integral_float(x) for x in v)


def test_both_encoders_agree_on_random_values():
    rng = random.Random(8785)

    def value(depth=0):
        kind = rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return struct.unpack(">d", rng.randbytes(8))[0] if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
        if kind == 1:
            return rng.randrange(-(2**60), 2**60)
        if kind == 2:
            return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800)])) for _ in range(5))
        if kind == 3:
            return rng.choice([None, True, False])
        if kind == 4:
            return rng.choice([0.1, 1e21, 1e-7, -0.0, 123456789.0])
        if kind in (5, 6):
            return {f"k{rng.randrange(50)}\u00e9": value(depth + 1) for _ in range(3)}
        return [value(depth + 1) for _ in range(3)]

    compared = 0
    for _ in range(3000):
        v = value()
        try:
            ours = canonical_json(v)
        except ValueError:  # a random double that is NaN or infinite
            continue
        assert ours == tool.jcs(v)
        assert canonical_json(json.loads(ours)) == ours or _has_big_integral_float(v)
        compared += 1
    assert compared > 2500
