"""The SQL of a count-delta trigger: on every INSERT, DELETE or counted UPDATE of a table, insert-only delta rows.

A table whose rows are counted (the clients, approvals' registration requests) gets one trigger per engine that
inserts a -1 row for the signature a row had and a +1 row for the one it has, in the writer's transaction, and
only when a column the signature reads changed; :mod:`inventory.counts` folds the deltas into the rollups.
Migrations build their triggers here so both engines and both tables get the same shape.

SQLite drops a table's triggers when a migration rebuilds the table: a migration that alters a counted table
must run the forward statements again afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DeltaTrigger:
    """``name`` names the triggers (and PostgreSQL's function ``registrar_<name>``); ``signature`` is (delta
    column, SQL expression over the row ``R``); ``watched`` the expressions over ``R`` an UPDATE must change."""

    name: str
    table: str
    delta_table: str
    signature: Sequence[tuple[str, str]]
    watched: Sequence[str]

    @property
    def columns(self) -> str:
        return "n, " + ", ".join(column for column, _ in self.signature)

    def _values(self, sign: int, record: str) -> str:
        return f"({sign}, " + ", ".join(expr.replace("R.", f"{record}.") for _, expr in self.signature) + ")"

    def _changed(self, distinct: str) -> str:
        def side(record: str, expr: str) -> str:
            return f"({expr.replace('R.', f'{record}.')})"

        return " OR ".join(f"{side('OLD', e)} {distinct} {side('NEW', e)}" for e in self.watched)

    def _insert(self) -> str:
        return f"INSERT INTO {self.delta_table} ({self.columns}) VALUES "  # noqa: S608 - constants

    def forward(self, vendor: str) -> list[str]:
        insert, name = self._insert(), self.name
        if vendor == "postgresql":
            return [
                f"""CREATE OR REPLACE FUNCTION registrar_{name}() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {insert}{self._values(1, "NEW")};
    ELSIF TG_OP = 'DELETE' THEN
        {insert}{self._values(-1, "OLD")};
    ELSE
        {insert}{self._values(-1, "OLD")}, {self._values(1, "NEW")};
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql""",
                f"DROP TRIGGER IF EXISTS {name} ON {self.table}",
                f"CREATE TRIGGER {name} AFTER INSERT OR DELETE ON {self.table} "
                f"FOR EACH ROW EXECUTE FUNCTION registrar_{name}()",
                f"DROP TRIGGER IF EXISTS {name}_update ON {self.table}",
                f"CREATE TRIGGER {name}_update AFTER UPDATE ON {self.table} "
                f"FOR EACH ROW WHEN ({self._changed('IS DISTINCT FROM')}) EXECUTE FUNCTION registrar_{name}()",
            ]
        if vendor == "sqlite":
            return [
                *self.backward("sqlite"),
                f"CREATE TRIGGER {name}_insert AFTER INSERT ON {self.table} "
                f"BEGIN {insert}{self._values(1, 'NEW')}; END",
                f"CREATE TRIGGER {name}_delete AFTER DELETE ON {self.table} "
                f"BEGIN {insert}{self._values(-1, 'OLD')}; END",
                f"CREATE TRIGGER {name}_update AFTER UPDATE ON {self.table} WHEN {self._changed('IS NOT')} "
                f"BEGIN {insert}{self._values(-1, 'OLD')}, {self._values(1, 'NEW')}; END",
            ]
        return []

    def backward(self, vendor: str) -> list[str]:
        name = self.name
        if vendor == "postgresql":
            return [
                f"DROP TRIGGER IF EXISTS {name}_update ON {self.table}",
                f"DROP TRIGGER IF EXISTS {name} ON {self.table}",
                f"DROP FUNCTION IF EXISTS registrar_{name}()",
            ]
        if vendor == "sqlite":
            return [f"DROP TRIGGER IF EXISTS {name}_{op}" for op in ("insert", "delete", "update")]
        return []

    def backfill(self, sign: int = 1, *, where: str = "TRUE", replace: dict[str, str] | None = None) -> str:
        """Rows already in the table entering the counts as ``sign`` deltas (``replace``: delta column → an
        expression to use instead of the signature's, e.g. the value a column had before)."""
        replace = replace or {}
        select = ", ".join(replace.get(column, expr) for column, expr in self.signature)
        return (
            f"INSERT INTO {self.delta_table} ({self.columns}) "  # noqa: S608 - constants
            f"SELECT {sign}, {select} FROM {self.table} R WHERE {where}"
        )

    def install(self, schema_editor) -> None:
        for statement in self.forward(schema_editor.connection.vendor):
            schema_editor.execute(statement)

    def uninstall(self, schema_editor) -> None:
        for statement in self.backward(schema_editor.connection.vendor):
            schema_editor.execute(statement)

    def names(self, vendor: str) -> set[str]:
        """The trigger names on the table (what a test lists after a full migrate)."""
        if vendor == "postgresql":
            return {self.name, f"{self.name}_update"}
        return {f"{self.name}_{op}" for op in ("insert", "delete", "update")}


COUNTS_LOCK = 0x5245_4731_434E_54  # inventory.counts' folder lock ("REG1CNT"), here for migrations to take


def fill_projection(schema_editor, *, target: str, rollup: str, keys: Sequence[str], where: str = "TRUE") -> None:
    """A migration creating a projection (``inventory.counts.Projection``) fills it from its rollup's folded rows:
    the deltas not folded yet reach both through the folder later. On PostgreSQL the folder's lock is held to the
    end of the migration's transaction, so no fold lands between the read of the rollup and the new table."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"SELECT pg_advisory_xact_lock({COUNTS_LOCK})")
    columns = ", ".join(keys)
    schema_editor.execute(
        f"INSERT INTO {target} ({columns}, n) SELECT {columns}, SUM(n) FROM {rollup} "  # noqa: S608 - constants
        f"WHERE {where} GROUP BY {columns} HAVING SUM(n) <> 0"
    )
