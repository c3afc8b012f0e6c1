"""Keyset pagination on (sort column, id): no OFFSET, so page 10,000 costs what page 1 costs.

The cursor is an opaque, URL-safe token in the query string (``?after=…`` / ``?before=…``) holding the
sort key of the last/first row shown, so the URL *is* the saved view: filters + sort + position.
NULL sorts as the largest value (PostgreSQL's default), so one (column, id) btree index serves both directions.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import BadRequest
from django.db import connection
from django.db.models import BooleanField, F, Field, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from inventory.models import Client

# Sortable columns: public name -> model field. The default sort is newest first.
SORTS: dict[str, str] = {
    "name": "name",
    "created": "created_at",
    "expires": "expires_at",
    "state": "state",
    "tier": "risk_tier",
    "depth": "depth",
}
NULLABLE = {"expires_at"}
DEFAULT_SORT = "-created"
SORT_CHOICES = [(f"{prefix}{key}", f"{key} ({'desc' if prefix else 'asc'})") for key in SORTS for prefix in ("", "-")]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def parse_sort(sort: str | None) -> tuple[str, bool]:
    """(model field, descending) for a public sort value; unknown values fall back to the default."""
    sort = sort or DEFAULT_SORT
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    if key not in SORTS:
        return parse_sort(DEFAULT_SORT)
    return SORTS[key], descending


def encode_cursor(value: Any, pk: int) -> str:
    if isinstance(value, datetime):
        value = {"dt": value.isoformat()}
    raw = json.dumps([value, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# What a cursor's sort value must be, by column (anything else is a text column); and the id's range.
_CURSOR_KINDS = {"created_at": "datetime", "expires_at": "datetime", "depth": "int"}
_MAX_ID = 2**63 - 1
_MAX_INT = 2**31 - 1
_MAX_TEXT = 1000


def decode_cursor(token: str, field: str | None = None) -> tuple[Any, int]:
    """The (sort value, id) a cursor holds; BadRequest unless it is one this sort could have made.

    A cursor comes from the query string, so anyone can craft one: its value must have the type of the sort
    column (``field``) and its id the range of one, or the database would be the one to refuse it (a 500).
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value, pk = json.loads(raw)
        if isinstance(value, dict):
            value = parse_datetime(value["dt"])
            if value is None:
                raise ValueError("bad datetime")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise BadRequest("Invalid page cursor.") from exc
    if type(pk) is not int or not 0 < pk <= _MAX_ID or (field is not None and not _cursor_value_fits(field, value)):
        raise BadRequest("Invalid page cursor.")
    return value, pk


def _cursor_value_fits(field: str, value: Any) -> bool:
    kind = _CURSOR_KINDS.get(field, "text")
    if value is None:
        return field in NULLABLE
    if kind == "datetime":
        return isinstance(value, datetime) and value.tzinfo is not None
    if kind == "int":
        return type(value) is int and -_MAX_INT <= value <= _MAX_INT
    return isinstance(value, str) and len(value) <= _MAX_TEXT and "\x00" not in value


def _row_compare(field: str, op: str, value: Any, pk: int) -> Q:
    """``(field, id) op (value, pk)`` as one row comparison, so PostgreSQL reads a single index range.

    Elsewhere (SQLite, ``make run``) through the ORM, which prepares ``value`` as the column stores it: a raw
    parameter would reach SQLite as Python's text of the value, and an aware datetime's text (``+00:00``
    suffix) does not compare with the stored one, so pages repeated or skipped rows.
    """
    if connection.vendor != "postgresql":
        lookup = "gt" if op == ">" else "lt"
        return Q(**{f"{field}__{lookup}": value}) | Q(**{field: value, f"pk__{lookup}": pk})
    model_field = Client._meta.get_field(field)
    assert isinstance(model_field, Field)  # one of SORTS' columns
    column = model_field.column
    sql = f'("inventory_client"."{column}", "inventory_client"."id") {op} (%s, %s)'
    # column comes from the SORTS whitelist; values are parameters.
    return Q(RawSQL(sql, (value, pk), output_field=BooleanField()))  # noqa: S611


def _after(field: str, descending: bool, value: Any, pk: int) -> Q:
    """Rows strictly after (value, pk) in the page order. NULL sorts as the largest value (PostgreSQL's
    default: last ascending, first descending), so the plain (field, id) btree index serves both ways."""
    if value is None:  # only in NULLABLE columns
        if descending:
            return Q(**{f"{field}__isnull": True, "pk__lt": pk}) | Q(**{f"{field}__isnull": False})
        return Q(**{f"{field}__isnull": True, "pk__gt": pk})
    if descending:
        return _row_compare(field, "<", value, pk)
    after = _row_compare(field, ">", value, pk)
    return after | Q(**{f"{field}__isnull": True}) if field in NULLABLE else after


def _before(field: str, descending: bool, value: Any, pk: int) -> Q:
    """Rows strictly before (value, pk) in the page order."""
    if value is None:
        if descending:
            return Q(**{f"{field}__isnull": True, "pk__gt": pk})
        return Q(**{f"{field}__isnull": False}) | Q(**{f"{field}__isnull": True, "pk__lt": pk})
    if descending:
        before = _row_compare(field, ">", value, pk)
        return before | Q(**{f"{field}__isnull": True}) if field in NULLABLE else before
    return _row_compare(field, "<", value, pk)


def _ordering(field: str, descending: bool):
    # Spelled out so SQLite (NULLs smallest by default) pages exactly like PostgreSQL (NULLs largest).
    if descending:
        return [F(field).desc(nulls_first=True), F("pk").desc()]
    return [F(field).asc(nulls_last=True), F("pk").asc()]


@dataclass
class KeysetPage:
    items: list
    sort: str
    next_cursor: str | None
    prev_cursor: str | None
    page_size: int

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    @property
    def has_previous(self) -> bool:
        return self.prev_cursor is not None


def keyset_paginate(
    qs: QuerySet,
    *,
    sort: str | None,
    after: str | None = None,
    before: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    fields: tuple[str, ...] = (),
) -> KeysetPage:
    """Two queries (page ids, then rows); ``after``/``before`` are cursors from a previous page.

    With ``fields`` (column names and lookups such as ``owner__username``) the rows are named tuples of those
    values, ``pk`` and the sort column instead of model instances: a page that only shows values skips building
    a model, and one per joined row, for each row (about half of the rows query's Python time)."""
    field, descending = parse_sort(sort)
    public_sort = ("-" if descending else "") + next(k for k, v in SORTS.items() if v == field)
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    backwards = bool(before) and not after
    if after:
        qs = qs.filter(_after(field, descending, *decode_cursor(after, field)))
    elif before:
        qs = qs.filter(_before(field, descending, *decode_cursor(before, field)))
    ordering = _reverse_ordering(field, descending) if backwards else _ordering(field, descending)
    # Two steps: the page's ids (a narrow query the planner answers from indexes alone, e.g. a BitmapAnd of
    # the search and filter indexes), then those rows with their joins by primary key.
    ids = list(qs.order_by(*ordering).values_list("pk", flat=True)[: page_size + 1])
    more = len(ids) > page_size
    ids = ids[:page_size]
    page_rows = qs.filter(pk__in=ids).order_by()
    if fields:
        page_rows = page_rows.values_list(*dict.fromkeys(("pk", field, *fields)), named=True)
    by_pk = {obj.pk: obj for obj in page_rows} if ids else {}
    rows = [by_pk[pk] for pk in ids if pk in by_pk]
    if backwards:
        rows.reverse()  # walked the reversed order from the cursor; flip the page back
        has_prev, has_next = more, True
    else:
        has_prev, has_next = bool(after), more
    next_cursor = encode_cursor(getattr(rows[-1], field), rows[-1].pk) if rows and has_next else None
    prev_cursor = encode_cursor(getattr(rows[0], field), rows[0].pk) if rows and has_prev else None
    return KeysetPage(rows, public_sort, next_cursor, prev_cursor, page_size)


def _reverse_ordering(field: str, descending: bool):
    return _ordering(field, not descending)


class KeysetPagination(BasePagination):
    """The same keyset pages for the API: ``?sort=…&after=…|before=…&page_size=…``."""

    def paginate_queryset(self, queryset, request, view=None):
        try:
            size = int(request.query_params.get("page_size", DEFAULT_PAGE_SIZE))
        except ValueError:
            size = DEFAULT_PAGE_SIZE
        self.request = request
        try:
            self.page = keyset_paginate(
                queryset,
                sort=request.query_params.get("sort"),
                after=request.query_params.get("after"),
                before=request.query_params.get("before"),
                page_size=size,
            )
        except BadRequest as refused:
            raise ValidationError({"after" if request.query_params.get("after") else "before": [str(refused)]})
        return self.page.items

    def _link(self, param: str, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        params = self.request.query_params.copy()
        params.pop("after", None)
        params.pop("before", None)
        params[param] = cursor
        return self.request.build_absolute_uri(self.request.path + "?" + params.urlencode())

    def get_paginated_response(self, data):
        return Response(
            {
                "next": self._link("after", self.page.next_cursor),
                "previous": self._link("before", self.page.prev_cursor),
                "sort": self.page.sort,
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "sort": {"type": "string"},
                "results": schema,
            },
        }
