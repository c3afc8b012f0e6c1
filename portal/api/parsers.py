"""The API's JSON parser: strict I-JSON (``portal.jsonbody``), the same rules as the agents' endpoints.

DRF's own parser lets a body nested too deeply for Python's parser raise RecursionError (a 500) and accepts
``NaN``, overflowing numbers and unpaired surrogates that the database then refuses (another 500). Here each
is a 400 ``{"detail": "JSON parse error - …"}`` before any view runs.
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from portal import jsonbody


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return jsonbody.loads(stream.read())
        except ValueError as exc:  # its message says why without echoing the input
            raise ParseError(f"JSON parse error - {exc}") from None
