"""Lists that never count more than they show: a bounded page count for HTML lists, keyset pages for the API.

An exact ``COUNT(*)`` over a large result set reads every matching row; at 10M clients that is seconds. The
:class:`BoundedPaginator` counts at most ``REGISTRAR_COUNT_THRESHOLD + 1`` rows (``SELECT COUNT(*) FROM
(SELECT … LIMIT n)``) and, past the threshold, shows "10,000+". :class:`OrderedKeysetPagination` pages API
lists in their own ordering (ending in ``id``) with the ``?after=``/``?before=`` cursors and the
``next``/``previous`` links of ``/api/v1/clients/`` (``inventory.pagination``): no count, no OFFSET.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.paginator import Paginator
from django.db.models import DateTimeField, IntegerField, Q, QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, LimitOffsetPagination
from rest_framework.response import Response

DEFAULT_COUNT_THRESHOLD = 10_000


def count_threshold() -> int:
    return int(getattr(settings, "REGISTRAR_COUNT_THRESHOLD", DEFAULT_COUNT_THRESHOLD))


def bounded_count(qs: QuerySet, threshold: int | None = None) -> int:
    """How many rows ``qs`` has, counting at most ``threshold + 1`` (one more than the threshold means "more")."""
    limit = (threshold if threshold is not None else count_threshold()) + 1
    return qs.order_by()[:limit].count()


def count_label(n: int, threshold: int | None = None) -> str:
    """``n`` as shown: "1,234", or "10,000+" past the threshold."""
    threshold = threshold if threshold is not None else count_threshold()
    return f"{threshold:,}+" if n > threshold else f"{n:,}"


class BoundedCount(int):
    """A count that stopped at the threshold + 1 (a home tile, a navigation badge): the number counted, shown
    as "1,234" or, past the threshold, "10,000+"."""

    threshold: int

    def __new__(cls, value: int, threshold: int | None = None):
        obj = super().__new__(cls, value)
        obj.threshold = threshold if threshold is not None else count_threshold()
        return obj

    @property
    def capped(self) -> bool:
        return self > self.threshold

    def __str__(self) -> str:
        return count_label(int(self), self.threshold)


def bounded(qs: QuerySet, threshold: int | None = None) -> BoundedCount:
    """:func:`bounded_count` of ``qs`` as a :class:`BoundedCount` (one ``COUNT`` over a ``LIMIT``)."""
    threshold = threshold if threshold is not None else count_threshold()
    return BoundedCount(bounded_count(qs, threshold), threshold)


class BoundedPaginator(Paginator):
    """A Paginator whose ``count`` stops at the threshold + 1: pages past it are not reachable by number
    (filter or sort to narrow), and the template shows ``count_label`` ("10,000+") and ``capped``."""

    def __init__(self, object_list, per_page, threshold: int | None = None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.threshold = threshold if threshold is not None else count_threshold()

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return bounded_count(self.object_list, self.threshold)
        return min(len(self.object_list), self.threshold + 1)

    @property
    def capped(self) -> bool:
        return self.count > self.threshold

    @property
    def count_label(self) -> str:
        return count_label(self.count, self.threshold)


# --- keyset pages for API lists ------------------------------------------------------------------------------

_MAX_ID = 2**63 - 1
_MAX_INT = 2**63 - 1
_MAX_TEXT = 1000


def _ordering_of(qs: QuerySet) -> list[tuple[str, bool]]:
    """(field or annotation, descending) for the queryset's own ordering, ending in the primary key (unique)."""
    order = [(f.lstrip("-"), f.startswith("-")) for f in qs.query.order_by if isinstance(f, str)]
    if len(order) != len(qs.query.order_by) or not order or order[-1][0] not in ("pk", "id"):
        raise ImproperlyConfigured("keyset pages need a queryset ordered by named columns ending in the pk")
    return [("pk" if name == "id" else name, desc) for name, desc in order]


def _kind(qs: QuerySet, name: str) -> str:
    if name == "pk":
        return "pk"
    annotation = qs.query.annotations.get(name)
    field = annotation.output_field if annotation is not None else qs.model._meta.get_field(name)
    if isinstance(field, DateTimeField):
        return "datetime"
    if isinstance(field, IntegerField):
        return "int"
    return "text"


def _encode(values: list) -> str:
    out = [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(out, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _fits(kind: str, value) -> bool:
    if kind == "pk":
        return type(value) is int and 0 < value <= _MAX_ID
    if kind == "int":
        return type(value) is int and -_MAX_INT <= value <= _MAX_INT
    if kind == "datetime":
        return isinstance(value, datetime) and value.tzinfo is not None
    return isinstance(value, str) and len(value) <= _MAX_TEXT and "\x00" not in value


def _decode(token: str, kinds: list[str]) -> list:
    """The sort values a cursor holds; ValueError unless this list's ordering could have made it (a crafted
    cursor of the wrong type would otherwise reach the database and come back a 500)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("wrong length")
        values = [parse_datetime(v["dt"]) if isinstance(v, dict) else v for v in values]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ValueError("Invalid page cursor.") from exc
    if not all(_fits(kind, value) for kind, value in zip(kinds, values, strict=True)):
        raise ValueError("Invalid page cursor.")
    return values


def _beyond(order: list[tuple[str, bool]], values: list, forward: bool) -> Q:
    """Rows strictly after (``forward``) or before the cursor in this ordering: (a, b, pk) > (x, y, p)
    lexicographically, each column in its own direction (the columns are NOT NULL)."""
    result = Q(pk__in=[])
    equal = Q()
    for (name, desc), value in zip(order, values, strict=True):
        lookup = "lt" if desc == forward else "gt"
        result |= equal & Q(**{f"{name}__{lookup}": value})
        equal &= Q(**{name: value})
    return result


class OrderedKeysetPagination(BasePagination):
    """Keyset pages in the list's own ordering (which must end in the pk): ``?after=…|before=…&page_size=…``;
    responds ``{next, previous, results}`` like ``/api/v1/clients/``. No count and no OFFSET, so every page
    costs what the first costs."""

    page_size = 50
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        try:
            size = int(request.query_params.get("page_size", self.page_size))
        except ValueError:
            size = self.page_size
        size = max(1, min(size, self.max_page_size))
        order = _ordering_of(queryset)
        kinds = [_kind(queryset, name) for name, _desc in order]
        after, before = request.query_params.get("after"), request.query_params.get("before")
        backwards = bool(before) and not after
        qs = queryset
        try:
            if after:
                qs = qs.filter(_beyond(order, _decode(after, kinds), forward=True))
            elif before:
                qs = qs.filter(_beyond(order, _decode(before, kinds), forward=False))
        except ValueError as refused:
            raise ValidationError({"after" if after else "before": [str(refused)]}) from refused
        if backwards:
            qs = qs.order_by(*[("" if desc else "-") + name for name, desc in order])
        rows = list(qs[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if backwards:
            rows.reverse()
            has_prev, has_next = more, True
        else:
            has_prev, has_next = bool(after), more

        def cursor(row) -> str:
            return _encode([getattr(row, name) for name, _desc in order])

        self.next_cursor = cursor(rows[-1]) if rows and has_next else None
        self.prev_cursor = cursor(rows[0]) if rows and has_prev else None
        return rows

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
                "next": self._link("after", self.next_cursor),
                "previous": self._link("before", self.prev_cursor),
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
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {"name": name, "required": False, "in": "query", "description": text, "schema": {"type": kind}}
            for name, text, kind in (
                ("after", "Cursor from a previous page's `next` link (keyset pagination).", "string"),
                ("before", "Cursor from a previous page's `previous` link.", "string"),
                ("page_size", f"Rows per page (1–{self.max_page_size}, default {self.page_size}).", "integer"),
            )
        ]


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` for the small API lists (policies, teams, people…): their ``count`` stops at the
    threshold + 1 like the pages' (``count`` > ``REGISTRAR_COUNT_THRESHOLD`` means "more than that")."""

    def get_count(self, queryset):
        if isinstance(queryset, QuerySet):
            return bounded_count(queryset)
        return min(len(queryset), count_threshold() + 1)
