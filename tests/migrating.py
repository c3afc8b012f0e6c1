"""Running a migration's RunPython function inside a test's transaction."""

from __future__ import annotations

from django.db import connection


class StatementsOnly:
    """What a RunPython function uses of a schema editor (its connection, ``execute``), inside the test's
    transaction (SQLite's schema editor refuses to open in one)."""

    connection = connection

    def execute(self, sql, params=()):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
