"""Client usage as the identity providers see it: when each client last obtained a token.

Reports arrive in batches of ``{idp, client_id, last_used_at}`` (``POST /api/v1/usage/`` from a log shipper
or an IdP's event hook). A batch is validated whole before anything is written: one bad item refuses the
whole batch, naming every problem. Then, in one transaction:

- ``last_used_at`` only moves forward: one ``UPDATE … WHERE last_used_at IS NULL OR last_used_at < new`` for the
  whole batch (the latest report per client wins inside a batch; an older report never rewinds a newer one,
  whatever order concurrent batches commit in);
- a client id the IdP reports but Registrar does not know is a **shadow** client: recorded as an unmanaged
  ``Client`` (``managed=False``, ``created_via=discovered``, no owner), like reconciliation's finds, with one
  ``client.discovered`` audit event each;
- an anonymous client (``created_via=anonymous``, docs/mcp.md "Expire unless used") that was used is renewed
  through the lifecycle (``client_extend_on_use``): its use + its approved lifetime, at most once per
  ``REGISTRAR_ANONYMOUS_USE_WINDOW_HOURS``, one ``client.renew`` audit event each; unused, it expires;
- one ``usage.ingest`` audit event for the batch (counts, source), not one per client: usage is an
  observation, not a governance change.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from inventory.choices import ClientState, CreatedVia
from inventory.models import Client, IdPConnection
from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)

#: Most items one batch may carry (a log shipper sends more batches, not bigger ones).
MAX_BATCH = 5000
#: How far in the future a report may be (clock skew between the IdP and Registrar).
FUTURE_SKEW = dt.timedelta(minutes=5)
FIELDS = ("idp", "client_id", "last_used_at")


class UsageBatchInvalid(ValueError):
    """The batch was refused whole; ``errors`` names each problem (``index``, ``field``, ``reason``)."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(_describe(e) for e in errors[:5]))


def _describe(error: dict) -> str:
    where = f"item {error['index']}" if error.get("index") is not None else "batch"
    field = error.get("field")
    return f"{where}: {field + ' ' if field else ''}{error['reason']}"


@dataclass(frozen=True)
class UsageReport:
    idp_id: int
    client_id: str
    last_used_at: dt.datetime


@dataclass
class UsageResult:
    received: int = 0
    updated: int = 0
    unchanged: int = 0
    shadow: list[str] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)  # anonymous clients renewed because they were used

    def to_dict(self) -> dict:
        return {
            "received": self.received,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "shadow_recorded": len(self.shadow),
        }


def parse_usage_batch(payload, *, now: dt.datetime | None = None) -> list[UsageReport]:
    """The batch's reports, or :class:`UsageBatchInvalid` naming every bad item. ``payload`` is the decoded JSON
    body: a list of items, or ``{"events": [...]}``."""
    now = now or timezone.now()
    if isinstance(payload, dict) and set(payload) == {"events"}:
        payload = payload["events"]
    if not isinstance(payload, list):
        raise UsageBatchInvalid([{"index": None, "field": "", "reason": 'expected a JSON list or {"events": [...]}'}])
    if not payload:
        raise UsageBatchInvalid([{"index": None, "field": "", "reason": "the batch is empty"}])
    if len(payload) > MAX_BATCH:
        raise UsageBatchInvalid(
            [{"index": None, "field": "", "reason": f"{len(payload)} items; at most {MAX_BATCH} per batch"}]
        )
    idps = dict(IdPConnection.objects.values_list("name", "pk"))
    errors: list[dict] = []
    reports: list[UsageReport] = []
    for index, item in enumerate(payload):
        if not isinstance(item, dict):
            errors.append({"index": index, "field": "", "reason": "not an object"})
            continue
        extra = sorted(set(item) - set(FIELDS))
        if extra:
            errors.append({"index": index, "field": extra[0], "reason": "unknown field"})
        missing = [name for name in FIELDS if name not in item]
        for name in missing:
            errors.append({"index": index, "field": name, "reason": "required"})
        if missing:
            continue
        idp_name, client_id, when = item["idp"], item["client_id"], item["last_used_at"]
        idp_id = idps.get(idp_name) if isinstance(idp_name, str) else None
        if idp_id is None:
            errors.append({"index": index, "field": "idp", "reason": f"no IdP connection named {str(idp_name)[:64]!r}"})
        if not isinstance(client_id, str) or not client_id.strip() or len(client_id) > 255:
            errors.append({"index": index, "field": "client_id", "reason": "a non-empty string of at most 255"})
        parsed = parse_datetime(when) if isinstance(when, str) else None
        if parsed is None or parsed.tzinfo is None:
            errors.append(
                {"index": index, "field": "last_used_at", "reason": "an RFC 3339 date-time with a UTC offset"}
            )
        elif parsed > now + FUTURE_SKEW:
            errors.append({"index": index, "field": "last_used_at", "reason": "in the future"})
        if idp_id is not None and parsed is not None and (not errors or errors[-1]["index"] != index):
            reports.append(UsageReport(idp_id=idp_id, client_id=client_id, last_used_at=parsed))
    if errors:
        raise UsageBatchInvalid(errors)
    return reports


def _latest_per_client(reports: list[UsageReport]) -> dict[tuple[int, str], dt.datetime]:
    latest: dict[tuple[int, str], dt.datetime] = {}
    for report in reports:
        key = (report.idp_id, report.client_id)
        if key not in latest or report.last_used_at > latest[key]:
            latest[key] = report.last_used_at
    return latest


def _move_forward(latest: dict[tuple[int, str], dt.datetime], source: str) -> int:
    """One statement: every known client's last use moves forward to the reported one, never back."""
    if not latest:
        return 0
    if connection.vendor == "postgresql":
        idp_ids, client_ids, whens = zip(*((k[0], k[1], v) for k, v in latest.items()), strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE inventory_client AS c
                   SET last_used_at = u.used_at, last_used_source = %s
                  FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS u(idp_id, client_id, used_at)
                 WHERE c.idp_id = u.idp_id AND c.idp_client_id = u.client_id
                   AND (c.last_used_at IS NULL OR c.last_used_at < u.used_at)
                """,
                [source, list(idp_ids), list(client_ids), list(whens)],
            )
            return cursor.rowcount
    updated = 0  # other databases (SQLite in tests): the same condition, one statement per client
    for (idp_id, client_id), when in latest.items():
        updated += (
            Client.objects.filter(idp_id=idp_id, idp_client_id=client_id)
            .exclude(last_used_at__gte=when)
            .update(last_used_at=when, last_used_source=source)
        )
    return updated


def _record_shadow(idp_id: int, client_id: str, when: dt.datetime, source: str, actor: Actor) -> Client | None:
    from inventory.services import new_registration_id

    now = timezone.now()
    try:
        with transaction.atomic():
            client = Client.objects.create(
                registration_id=new_registration_id(),
                idp_id=idp_id,
                idp_client_id=client_id,
                name=f"seen in usage: {client_id}"[:200],
                owner=None,
                state=ClientState.ACTIVE,
                created_via=CreatedVia.DISCOVERED,
                managed=False,
                discovered_at=now,
                state_changed_at=now,
                last_used_at=when,
                last_used_source=source,
                auth_method="unknown",
            )
    except IntegrityError:  # a concurrent batch recorded it first: its last use moves forward like any other
        _move_forward({(idp_id, client_id): when}, source)
        return None
    audit_record(
        actor=actor,
        action="client.discovered",
        object_type="client",
        object_id=client.registration_id,
        after={"idp_id": idp_id, "idp_client_id": client_id, "found_by": "usage", "last_used_at": when.isoformat()},
        reason=f"an IdP reported usage by a client id Registrar does not know ({source})",
    )
    return client


def _extend_anonymous(latest: dict[tuple[int, str], dt.datetime], actor: Actor) -> list[str]:
    """Renew the used anonymous clients of the batch (module docstring); their registration ids."""
    from inventory.lifecycle import client_extend_on_use

    window = dt.timedelta(hours=settings.REGISTRAR_ANONYMOUS_USE_WINDOW_HOURS)
    now = timezone.now()
    extended: list[str] = []
    keys = sorted(latest)
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        by_idp: dict[int, list[str]] = {}
        for idp_id, client_id in chunk:
            by_idp.setdefault(idp_id, []).append(client_id)
        for idp_id, client_ids in by_idp.items():
            anonymous = Client.objects.filter(
                idp_id=idp_id, idp_client_id__in=client_ids, created_via=CreatedVia.ANONYMOUS, state=ClientState.ACTIVE
            ).order_by("pk")
            for client in anonymous:
                used_at = latest[(idp_id, client.idp_client_id)]
                ttl = dt.timedelta(seconds=client.ceiling_ttl_seconds or 0)
                if client.expires_at is not None and min(used_at, now) + ttl < client.expires_at + window:
                    continue  # inside the window already (the lifecycle checks again, under the row lock)
                renewed = client_extend_on_use(client=client, used_at=used_at, window=window, actor=actor, now=now)
                if renewed is not None:
                    extended.append(renewed.registration_id)
    return extended


@transaction.atomic
def usage_ingest(reports: list[UsageReport], *, actor: Actor, source: str) -> UsageResult:
    """Apply a validated batch (:func:`parse_usage_batch`): last use moves forward, unknown clients become shadow
    clients, one ``usage.ingest`` audit event. ``source`` says who reported it (shown beside the last use)."""
    source = source[:128]
    latest = _latest_per_client(reports)
    result = UsageResult(received=len(reports))
    result.updated = _move_forward(latest, source)
    known: set[tuple[int, str]] = set()
    anonymous: set[tuple[int, str]] = set()
    idp_ids = {idp_id for idp_id, _ in latest}
    for idp_id in idp_ids:
        wanted = [client_id for i, client_id in latest if i == idp_id]
        for chunk_start in range(0, len(wanted), 1000):
            chunk = wanted[chunk_start : chunk_start + 1000]
            for cid, via in Client.objects.filter(idp_id=idp_id, idp_client_id__in=chunk).values_list(
                "idp_client_id", "created_via"
            ):
                known.add((idp_id, cid))
                if via == CreatedVia.ANONYMOUS:
                    anonymous.add((idp_id, cid))
    for key in sorted(set(latest) - known):
        shadow = _record_shadow(key[0], key[1], latest[key], source, actor)
        if shadow is not None:
            result.shadow.append(shadow.registration_id)
    result.unchanged = len(latest) - result.updated - len(result.shadow)
    if anonymous:  # one more query only when the batch names anonymous clients
        result.extended = _extend_anonymous({key: latest[key] for key in anonymous}, actor)
    audit_record(
        actor=actor,
        action="usage.ingest",
        object_type="usage_batch",
        object_id=source[:64],
        after={
            **result.to_dict(),
            "clients": len(latest),
            "shadow": result.shadow[:50],
            "extended": result.extended[:50],
        },
    )
    log_event(
        logger,
        "usage_ingest",
        source=source,
        received=result.received,
        updated=result.updated,
        shadow=len(result.shadow),
        extended=len(result.extended),
    )
    return result


#: How far back a pull from the IdP reads (Keycloak filters events by day; reading again is harmless: last use
#: only moves forward).
PULL_LOOKBACK = dt.timedelta(days=2)


def usage_pull(idp: IdPConnection, *, now: dt.datetime | None = None) -> UsageResult | None:
    """Ask the IdP itself when its clients last obtained a token (connectors that can: Keycloak's admin events),
    and ingest that like a pushed batch: forward only, unknown clients recorded as shadow, one ``usage.ingest``
    event per batch, source ``idp:<connection name>``. None when the connection cannot report usage. Connector
    errors propagate (the task logs them; the next run reads the same window again)."""
    from inventory.outbox.push import connector_for

    if idp.is_dry_run or not idp.enabled:
        return None
    now = now or timezone.now()
    latest: dict[str, dt.datetime] = {}
    with connector_for(idp) as connector:
        if not connector.can_report_usage:
            return None
        for client_id, when in connector.usage(since=now - PULL_LOOKBACK):
            if not client_id or len(client_id) > 255 or when > now + FUTURE_SKEW:
                continue
            if client_id not in latest or when > latest[client_id]:
                latest[client_id] = when
    total = UsageResult()
    reports = [UsageReport(idp.pk, client_id, when) for client_id, when in sorted(latest.items())]
    for start in range(0, len(reports), MAX_BATCH):
        part = usage_ingest(
            reports[start : start + MAX_BATCH], actor=Actor.system("usage_pull"), source=f"idp:{idp.name}"
        )
        total.received += part.received
        total.updated += part.updated
        total.unchanged += part.unchanged
        total.shadow.extend(part.shadow)
        total.extended.extend(part.extended)
    return total


__all__ = [
    "MAX_BATCH",
    "UsageBatchInvalid",
    "UsageReport",
    "UsageResult",
    "parse_usage_batch",
    "usage_ingest",
    "usage_pull",
]
