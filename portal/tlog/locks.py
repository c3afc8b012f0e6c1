"""Transaction-scoped, non-blocking locks for the log's single-writer jobs.

PostgreSQL: an advisory lock, released at commit or rollback. SQLite: nothing to take — Registrar runs it
with IMMEDIATE transactions, so a second writer waits for the first to commit and then sees its work (and
the unique log index would refuse a duplicate anyway).
"""

from __future__ import annotations

SEQUENCER_LOCK = 0x5245_4731_5345_51  # "REG1SEQ"
WITNESS_LOCK = 0x5245_4731_5749_54  # "REG1WIT"


def try_lock(connection, key: int) -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])
