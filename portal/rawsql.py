"""Hand-written statements for hot paths that still read and write ordinary model instances.

Building a QuerySet with ``select_related`` and an annotation and compiling it to SQL costs about a
millisecond of CPU per call, for SQL that PostgreSQL then runs in a tenth of that. On the registration
endpoint (hundreds of calls a second) that compilation was the biggest single cost, so the few queries there
are written by hand with this helper, which keeps the part worth keeping from the ORM:

- column lists come from the model's ``_meta`` (a new field is picked up, no column list to maintain);
- values go through the same converters the ORM applies (JSON decoding, SQLite's datetimes, encrypted
  fields), so the instances are indistinguishable from ``QuerySet`` results;
- writes (``InsertStatement``) prepare values as ``save()`` does, and ``from_select`` turns an insert into a
  data-modifying CTE, so one statement can write several rows (the intake's request and its audit event).

Use it only where a profile says so; everywhere else the ORM is the clearer tool.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Model

_M = TypeVar("_M", bound=Model)


class ModelColumns(Generic[_M]):
    """The columns of ``model`` selected under table alias ``alias``, and how to turn them back into an instance."""

    def __init__(self, model: type[_M], alias: str, *, defer: Iterable[str] = ()) -> None:
        """``defer``: fields left out of the SELECT; like ``QuerySet.defer()``, an instance loads one when it is
        first read (e.g. encrypted credentials a caller rarely needs, decrypted on every load otherwise)."""
        deferred = set(defer)
        names = {name for f in model._meta.concrete_fields for name in (f.name, f.attname)}
        if deferred - names or model._meta.pk.name in deferred:
            raise ValueError(f"cannot defer {sorted(deferred - names) or model._meta.pk.name} of {model.__name__}")
        self.model = model
        self.alias = alias
        self.fields = [f for f in model._meta.concrete_fields if f.name not in deferred and f.attname not in deferred]
        self.attnames = [f.attname for f in self.fields]
        self._pk_index = self.attnames.index(model._meta.pk.attname)
        self._converters: dict[str, list[tuple[int, list, Any]]] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def select(self, connection) -> str:
        """``"alias"."col", …`` for a SELECT list."""
        qn = connection.ops.quote_name
        return ", ".join(f"{qn(self.alias)}.{qn(f.column)}" for f in self.fields)

    def _converters_for(self, connection) -> list[tuple[int, list, Any]]:
        # The same (backend + field) converters the SQL compiler would apply to these columns.
        cached = self._converters.get(connection.alias)
        if cached is None:
            cached = []
            for i, field in enumerate(self.fields):
                col = field.get_col(self.alias)
                funcs = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
                if funcs:
                    cached.append((i, funcs, col))
            self._converters[connection.alias] = cached
        return cached

    def load(self, row: tuple, offset: int, connection) -> _M | None:
        """The instance from ``row[offset:offset + len(self)]``, or None when its primary key is NULL (outer join)."""
        values = list(row[offset : offset + len(self.fields)])
        if values[self._pk_index] is None:
            return None
        for i, funcs, col in self._converters_for(connection):
            value = values[i]
            for func in funcs:
                value = func(value, col, connection)
            values[i] = value
        return self.model.from_db(connection.alias, self.attnames, values)


def fetch_one(sql: str, params: list | tuple, using: str = "default") -> tuple | None:
    """Run ``sql`` on the ``using`` connection and return its first row."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


class InsertStatement:
    """``INSERT`` of one ``model`` instance, written once per database, with the values prepared exactly as
    ``Model.save()`` prepares them (``pre_save`` — e.g. ``auto_now_add`` — then ``get_db_prep_save``).

    An auto primary key left unset is assigned by the database and set on the instance (``RETURNING``).
    No signals are sent: use it only for models without ``pre_save``/``post_save`` receivers.
    """

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        pk = model._meta.pk
        self.fields = list(model._meta.concrete_fields)
        self.generated_fields = [f for f in self.fields if f is not pk or not getattr(pk, "db_returning", False)]
        self._sql: dict[tuple, str] = {}

    def sql(self, connection, *, with_pk: bool = True) -> str:
        """The statement for all concrete fields, or (``with_pk=False``) without the auto primary key."""
        key = (connection.alias, with_pk)
        sql = self._sql.get(key)
        if sql is None:
            qn = connection.ops.quote_name
            fields = self.fields if with_pk else self.generated_fields
            columns = ", ".join(qn(f.column) for f in fields)
            placeholders = ", ".join(["%s"] * len(fields))
            sql = f"INSERT INTO {qn(self.model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
            if not with_pk and connection.features.can_return_columns_from_insert:
                sql += f" RETURNING {qn(self.model._meta.pk.column)}"
            self._sql[key] = sql
        return sql

    def params(self, obj: Model, connection, *, with_pk: bool = True) -> list[Any]:
        fields = self.fields if with_pk else self.generated_fields
        return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]

    def insert(self, obj: Model, using: str = "default") -> Model:
        """Insert ``obj`` (inside the caller's transaction) and mark it saved, like ``save(force_insert=True)``."""
        connection = connections[using]
        with_pk = obj.pk is not None
        with connection.cursor() as cursor:
            cursor.execute(self.sql(connection, with_pk=with_pk), self.params(obj, connection, with_pk=with_pk))
            if not with_pk:
                returned = connection.features.can_return_columns_from_insert
                obj.pk = cursor.fetchone()[0] if returned else cursor.lastrowid
        obj._state.adding = False
        obj._state.db = using
        return obj

    def from_select(
        self, obj: Model, connection, *, expressions: Mapping[str, str], source: str = ""
    ) -> tuple[str, list[Any]]:
        """PostgreSQL: ``INSERT … SELECT`` of ``obj`` for a data-modifying CTE; (sql, params).

        The row travels as ONE jsonb parameter, expanded by ``jsonb_populate_record`` into the table's own row
        type, so PostgreSQL converts every value to its column's type (and checks lengths) as an INSERT would.
        One parameter instead of one per column: psycopg caches how it parses a statement only up to 50
        parameters, and parsing the intake's write every time cost a tenth of the endpoint's CPU.

        The columns named in ``expressions`` (attname → SQL, e.g. ``{"id": "head.last_event_id"}``) take
        those expressions instead. With ``source`` the SELECT also reads ``FROM source``, so no row there means
        nothing inserted. An auto primary key left unset is omitted (the database assigns it); add ``RETURNING``
        as needed. Values are prepared by ``pre_save`` and ``get_prep_value``, as ``save()`` prepares them.
        """
        with_pk = obj.pk is not None or self.model._meta.pk.attname in expressions
        fields = self.fields if with_pk else self.generated_fields
        key = (connection.alias, with_pk, tuple(sorted(expressions.items())), source)
        sql = self._sql.get(key)
        if sql is None:
            unsupported = [f.name for f in fields if f.attname not in expressions and not _json_safe(f)]
            if unsupported:
                raise TypeError(f"from_select cannot carry {self.model.__name__} fields {unsupported} as JSON")
            qn = connection.ops.quote_name
            table = qn(self.model._meta.db_table)
            columns = ", ".join(qn(f.column) for f in fields)
            values = ", ".join(expressions.get(f.attname) or f"r.{qn(f.column)}" for f in fields)
            sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM jsonb_populate_record(NULL::{table}, %s::jsonb) r"  # noqa: S608
            if source:
                sql += f", {source}"
            self._sql[key] = sql
        row = {f.column: f.get_prep_value(f.pre_save(obj, True)) for f in fields if f.attname not in expressions}
        return sql, [json.dumps(row, default=_json_scalar, ensure_ascii=False)]


# Field types whose prepared Python value has a faithful JSON form that PostgreSQL reads back into the column.
_JSON_SAFE = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "BigIntegerField",
        "IntegerField",
        "SmallIntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "BooleanField",
        "CharField",
        "TextField",
        "SlugField",
        "EmailField",
        "URLField",
        "DateTimeField",
        "DateField",
        "ForeignKey",
        "OneToOneField",
        "GenericIPAddressField",
        "UUIDField",
    }
)


def _json_safe(field) -> bool:
    if field.get_internal_type() == "JSONField":
        return field.encoder is None  # a custom encoder would have to run on its value alone
    return field.get_internal_type() in _JSON_SAFE


def _json_scalar(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()  # keeps microseconds and the UTC offset
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no JSON form for jsonb_populate_record")
