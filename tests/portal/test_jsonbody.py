"""portal.jsonbody: request bodies are I-JSON; what Python's json accepts beyond it is a clear ValueError."""

from __future__ import annotations

import pytest

from portal import jsonbody


def test_ordinary_json_parses_including_escaped_surrogate_pairs():
    assert jsonbody.loads(b'{"a": [1, 2.5, null, true], "b": "\\u00e9"}') == {"a": [1, 2.5, None, True], "b": "é"}
    assert jsonbody.loads(b'{"robot": "\\ud83e\\udd16"}') == {"robot": "\U0001f916"}  # a valid pair: one character
    assert jsonbody.loads('{"text": "a \\\\ud800 b"}') == {"text": "a \\ud800 b"}  # an escaped backslash, not a \u


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"x": "\\ud800"}', "unpaired surrogate"),  # a high half alone
        (b'{"x": ["ok", {"deep": "a\\uDFFFb"}]}', "unpaired surrogate"),  # a low half, nested, upper case
        (b'{"\\udc00": 1}', "unpaired surrogate"),  # in a key
        (b'{"x": NaN}', "NaN is not a JSON number"),
        (b'{"x": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"x": 1e999}', "out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"x": "\xff"}', "utf-8"),  # not UTF-8 at all
        (b"{not json", "Expecting property name"),
    ],
)
def test_what_no_column_can_store_is_refused_with_a_reason(raw, reason):
    with pytest.raises(ValueError, match=reason):
        jsonbody.loads(raw)
