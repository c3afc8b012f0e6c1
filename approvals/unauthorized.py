"""Refused credentials on the registration API: counted per source and minute, folded into the audit chain.

A 401 on ``/oauth2/register`` or an RFC 7592 URI (and a software statement that does not verify) is noise
until someone looks at it in bulk: a flood of garbage must not take the audit chain's lock that every
legitimate change needs, nor fill the chain. So:

- the request path (:func:`unauthorized_count`) runs ONE statement, an upsert into
  :class:`~approvals.models.UnauthorizedTally` (``INSERT … ON CONFLICT DO UPDATE SET count = count + 1``) in
  autocommit. It touches neither the audit chain nor any row a legitimate registration needs;
- the fold (:func:`unauthorized_fold`: beat task ``approvals.tasks.fold_unauthorized`` every minute, and
  ``manage.py sweep unauthorized``) turns each closed minute's rows into audit events — one per source,
  action and credential prefix, carrying the count — and deletes those rows in the same transaction.
  The actions are the ones single events used to have: ``registration.unauthorized`` and
  ``registration.statement_rejected``, and ``registration.anonymous_refused`` for a refused anonymous
  registration (docs/mcp.md), which anyone can send and so leaves no request row of its own.

Growth is bounded whatever arrives. A key is (minute, source address, action, credential prefix):

- a minute holds new keys only while it has fewer than ``REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE`` rows;
  a key that has a row keeps counting in it;
- a source gets at most :data:`PREFIXES_PER_SOURCE` rows of its own prefixes, then one "other credentials"
  row (prefix ``*``), so one address cycling random bearers cannot crowd out the others;
- a source arriving once the minute is full counts in one of :data:`OVERFLOW_SHARDS` "other sources" rows
  (source ``*<n>``, chosen by a hash of the address, so a flood does not queue on one hot row); the fold
  merges them into ONE event per action.

With a cap of N, a minute has at most 2N + 2 × :data:`OVERFLOW_SHARDS` rows and yields at most 2N + 2
events, whether a million spoofed addresses or one sent the traffic; every refused request is in a count.

A minute is folded once it has been over for :data:`FOLD_GRACE`: a request counted in it would have to sit
in its one statement that long to land after the fold (it would then be folded on the next run, as a second
event for that source and minute, so no count is ever lost).
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from approvals.models import UnauthorizedTally
from inventory.sweeps import SweepResult
from portal.audit import Actor, audit_record_many
from portal.logs import log_event

logger = logging.getLogger(__name__)

ACTION_UNAUTHORIZED = "registration.unauthorized"
ACTION_STATEMENT_REJECTED = "registration.statement_rejected"
# A refused anonymous registration (docs/mcp.md): anyone can send one, so it is tallied like a bad credential.
ACTION_ANONYMOUS_REFUSED = "registration.anonymous_refused"
ACTIONS = (ACTION_UNAUTHORIZED, ACTION_STATEMENT_REJECTED, ACTION_ANONYMOUS_REFUSED)

PREFIXES_PER_SOURCE = 5
OVERFLOW_SHARDS = 8
OVERFLOW_PREFIX = "*"  # source "*<n>": other sources; credential_prefix "*": other credentials of a source
UNKNOWN_SOURCE = "unknown"
FOLD_GRACE = dt.timedelta(minutes=1)

# Where the request lands, decided by the database in the same statement ("slot"):
#   0 its own key (the key exists, or there is room for it), 1 its source's "other credentials" row,
#   2 an "other sources" row. CASE evaluates in order, so a key that already has a row costs one index probe.
_UPSERT = """
INSERT INTO {t} (minute, source, action, credential_prefix, {count}, first_at, last_at, path, error, reason)
SELECT %s, CASE slot.n WHEN 2 THEN %s ELSE %s END, %s, CASE slot.n WHEN 0 THEN %s WHEN 1 THEN %s ELSE '' END,
       1, %s, %s, %s, %s, %s
FROM (SELECT CASE
        WHEN EXISTS (SELECT 1 FROM {t} WHERE minute = %s AND source = %s AND action = %s
                     AND credential_prefix = %s) THEN 0
        WHEN (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE minute = %s AND source = %s LIMIT %s) per_source)
             >= %s THEN 1
        WHEN (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE minute = %s LIMIT %s) per_minute) < %s THEN 0
        WHEN EXISTS (SELECT 1 FROM {t} WHERE minute = %s AND source = %s) THEN 1
        ELSE 2 END AS n) slot
WHERE true
ON CONFLICT (minute, source, action, credential_prefix) DO UPDATE SET
    {count} = {t}.{count} + 1, last_at = excluded.last_at, path = excluded.path, error = excluded.error,
    reason = excluded.reason
"""  # "WHERE true": SQLite needs it to tell ON CONFLICT from a join constraint after INSERT … SELECT


def _minute(value: dt.datetime) -> dt.datetime:
    return value.replace(second=0, microsecond=0)


def unauthorized_count(
    *,
    action: str,
    source: str | None,
    credential_prefix: str,
    path: str,
    error: str,
    reason: str,
    now: dt.datetime | None = None,
) -> None:
    """Count one refused credential: one upsert, no audit append, no lock anything else waits for.

    ``credential_prefix`` is the credential's public prefix (never the credential); ``reason`` the answer's
    description. Values are expected clean of NUL characters (the intake's ``storable``).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    now = now or timezone.now()
    ops = connection.ops
    minute = ops.adapt_datetimefield_value(_minute(now))
    at = ops.adapt_datetimefield_value(now)
    source = (source or UNKNOWN_SOURCE)[:64]
    prefix = credential_prefix[:16]
    overflow = f"{OVERFLOW_PREFIX}{zlib.crc32(source.encode()) % OVERFLOW_SHARDS}"
    cap = settings.REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE
    params: list[Any] = [
        minute,
        overflow,
        source,
        action,
        prefix,
        OVERFLOW_PREFIX,
        at,
        at,
        path[:200],
        error[:64],
        reason[:500],
        minute,
        source,
        action,
        prefix,
        minute,
        source,
        PREFIXES_PER_SOURCE,
        PREFIXES_PER_SOURCE,
        minute,
        cap,
        cap,
        minute,
        source,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(), params)


def _upsert_sql() -> str:
    qn = connection.ops.quote_name
    return _UPSERT.format(t=qn(UnauthorizedTally._meta.db_table), count=qn("count"))


def unauthorized_fold(*, now: dt.datetime | None = None) -> int:
    """Turn the tallies of every minute that closed at least :data:`FOLD_GRACE` ago into audit events.

    One transaction per minute: lock its rows (skipping rows another fold holds), delete them, append the
    events (:func:`portal.audit.audit_record_many`). Returns the number of events written. Safe to run on
    several workers at once: a minute's rows are folded by exactly one of them.
    """
    now = now or timezone.now()
    cutoff = _minute(now) - FOLD_GRACE
    written = 0
    while True:
        minute = (
            UnauthorizedTally.objects.filter(minute__lt=cutoff)
            .order_by("minute")
            .values_list("minute", flat=True)
            .first()
        )
        if minute is None:
            break
        with transaction.atomic():
            rows = list(
                UnauthorizedTally.objects.select_for_update(skip_locked=True).filter(minute=minute).order_by("id")
            )
            if not rows:
                break  # another fold holds this minute; it carries on with the later ones
            deleted, _ = UnauthorizedTally.objects.filter(pk__in=[row.pk for row in rows]).delete()
            if deleted != len(rows):
                # SQLite has no row locks: another fold deleted them first. Write nothing.
                transaction.set_rollback(True)
                break
            events = audit_record_many(fold_specs(rows))
        written += len(events)
    if written:
        log_event(logger, "unauthorized_folded", events=written)
    return written


def fold_specs(rows: list[UnauthorizedTally]) -> list[dict[str, Any]]:
    """One audit event spec per row, except that a minute's "other sources" rows make one event per action."""
    specs = []
    overflow: dict[tuple[dt.datetime, str], list[UnauthorizedTally]] = defaultdict(list)
    for row in rows:
        if row.source.startswith(OVERFLOW_PREFIX):
            overflow[(row.minute, row.action)].append(row)
        else:
            specs.append(_spec([row], source=row.source))
    for group in overflow.values():
        specs.append(_spec(group, source=None))
    return specs


def _spec(rows: list[UnauthorizedTally], *, source: str | None) -> dict[str, Any]:
    last = max(rows, key=lambda row: row.last_at)
    count = sum(row.count for row in rows)
    prefixes = {row.credential_prefix for row in rows}
    label = source if source is not None else "(other sources)"
    return {
        "actor": Actor.agent(f"unauthenticated {label}", ""),
        "action": last.action,
        "object_type": "registration_endpoint",
        "object_id": last.path[:64],
        "after": {
            "source_ip": source if source not in (None, UNKNOWN_SOURCE) else None,
            "other_sources": source is None,
            "credential_prefix": prefixes.pop() if len(prefixes) == 1 else OVERFLOW_PREFIX,
            "count": count,
            "minute": last.minute.isoformat(),
            "first_at": min(row.first_at for row in rows).isoformat(),
            "last_at": last.last_at.isoformat(),
            "error": last.error,
            "path": last.path,
        },
        "reason": last.reason,
    }


def sweep_unauthorized(*, now: dt.datetime | None = None, batch_size: int | None = None) -> SweepResult:
    """``manage.py sweep unauthorized``: :func:`unauthorized_fold` now. (``batch_size`` is accepted like the
    other sweeps' but unused: a fold transaction holds one minute, which the caps keep small.)"""
    result = SweepResult("unauthorized")
    result.counts["events"] = unauthorized_fold(now=now)
    return result
