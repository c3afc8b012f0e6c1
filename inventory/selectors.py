"""Reads for the security views: inventory search, "explain this client", dashboard aggregates, lineage.

Everything here is a read. Approvals data (requests, decisions, tokens) is reached through the app
registry (``apps.get_model``) because inventory never imports approvals code.

Search on PostgreSQL combines, as one OR of index-backed conditions (so the planner can BitmapOr them):

* full text: ``search_document @@ websearch_to_tsquery('english', q)`` over name + purpose (stored
  generated tsvector column, GIN);
* substrings: ``column ILIKE '%q%'`` over name and software id (GIN trigram);
* identifiers by prefix: ``column LIKE 'q%'`` over registration id, client id, SPIFFE ID (btree pattern ops);
* typos: ``q <% name`` (trigram word similarity, same GIN trigram index), word by word for several words;
* owners and teams: matching users/teams are looked up first (small tables), then ``owner_id = ANY(...)``.

SQLite has none of these, so it falls back to ``icontains`` on the same fields.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import BooleanField, Count, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDay
from django.utils import timezone

from inventory.ceilings import DEFAULT_TTL_CEILINGS, Ceiling, duration
from inventory.choices import LIVE_STATES, RiskTier
from inventory.models import Client, IdPConnection, OutboxEntry, ScopeDefinition, Team
from portal.audit import censor
from portal.models import AuditEvent
from portal.roles import can_see_all_clients
from portal.tlog.evidence import b64, log_evidence

# A stored generated tsvector column added by migration 0005_security_pg_trgm (PostgreSQL only; not a model
# field, so the ORM never writes it): to_tsvector('english', name || ' ' || purpose).
SEARCH_DOCUMENT_SQL = '"inventory_client"."search_document"'
# Purpose is searched by (stemmed) full text only: a substring test on long text costs on every candidate row.
SUBSTRING_COLUMNS = ("name", "software_id")  # ILIKE '%q%' (GIN trigram)
PREFIX_COLUMNS = ("registration_id", "idp_client_id", "spiffe_id")  # LIKE 'q%' (btree pattern ops)
# Typos are tolerated in names (short text); purposes get stemmed full text. Word similarity
# against long purposes costs ~10 µs a row in the recheck, too much when a common word matches thousands.
TYPO_COLUMNS = ("name",)
MAX_PEOPLE_MATCHES = 500  # owners/teams matched by a search term; more than that is not a useful filter
TIMELINE_OBJECT_TYPES = ("client", "registration_request")

# Policy defaults (DESIGN.md "Policy"): the TTL ceiling per tier, the one table in inventory.ceilings (a report
# must not change when a draft policy is edited).
TTL_CEILING_SECONDS = DEFAULT_TTL_CEILINGS
KEY_BASED_AUTH_METHODS = frozenset({"private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"})
SHARED_SECRET_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "client_secret_jwt"})


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


# pg_trgm's default word-similarity threshold (0.6) misses one-letter typos in short words
# ("invoce" vs "invoice" scores 0.57). Set per connection so ``q <% column`` stays an index operator.
WORD_SIMILARITY_THRESHOLD = 0.5


def configure_search_session(sender, connection, **kwargs):
    """``connection_created`` hook: session settings the search relies on (PostgreSQL only).

    JIT is switched off too: on the dashboard and report aggregates it spent ~0.5 s compiling to save
    nothing (they are index-backed scans of a few hundred thousand narrow rows at most)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('pg_trgm.word_similarity_threshold', %s, false), set_config('jit', 'off', false)",
            [str(WORD_SIMILARITY_THRESHOLD)],
        )


def cached_report(key: str, compute, *, refresh: bool = False):
    """Dashboards and reports are snapshots: recompute at most every REGISTRAR_REPORT_CACHE_SECONDS (60 s)
    per key, so a room full of auditors refreshing the page costs one computation a minute.

    Beat keeps the snapshots warm (``inventory.tasks.refresh_report_snapshots`` with ``refresh=True`` twice
    per period), so people never wait for the full aggregate at scale; if beat stops, the first request
    after expiry computes it inline, as before.
    """
    seconds = settings.REGISTRAR_REPORT_CACHE_SECONDS
    if seconds <= 0:
        return compute()
    full_key = f"registrar:report:{key}"
    value = None if refresh else cache.get(full_key)
    if value is None:
        value = compute()
        cache.set(full_key, value, timeout=seconds)
    return value


# --- visibility ------------------------------------------------------------------------------


def clients_visible_to(user) -> QuerySet[Client]:
    """Security and admins see every client; everyone else only the clients they own."""
    qs = Client.objects.all()
    if can_see_all_clients(user):
        return qs
    return qs.filter(owner_id=user.pk)


# --- search ----------------------------------------------------------------------------------


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _people_matching(term: str) -> tuple[list[int], list[int]]:
    """Ids of owners and teams whose name matches (typo-tolerant on PostgreSQL)."""
    User = get_user_model()
    if is_postgres():
        like = f"%{_like_escape(term)}%"
        user_q = RawSQL(
            '("portal_user"."username" ILIKE %s OR %s <%% "portal_user"."username" '
            'OR ("portal_user"."first_name" || \' \' || "portal_user"."last_name") ILIKE %s)',
            (like, term, like),
            output_field=BooleanField(),
        )
        team_q = RawSQL(
            '("inventory_team"."name" ILIKE %s OR "inventory_team"."slug" ILIKE %s OR %s <%% "inventory_team"."name")',
            (like, like, term),
            output_field=BooleanField(),
        )
        users = User.objects.filter(user_q)
        teams = Team.objects.filter(team_q)
    else:
        users = User.objects.filter(
            Q(username__icontains=term) | Q(first_name__icontains=term) | Q(last_name__icontains=term)
        )
        teams = Team.objects.filter(Q(name__icontains=term) | Q(slug__icontains=term))
    return (
        list(users.values_list("pk", flat=True)[:MAX_PEOPLE_MATCHES]),
        list(teams.values_list("pk", flat=True)[:MAX_PEOPLE_MATCHES]),
    )


def _word_condition(word: str, *, typos: bool) -> tuple[str, list[Any]]:
    """``word`` as a substring of any searchable column (trigram GIN), or a near-miss of a word in name/purpose."""
    like = f"%{_like_escape(word)}%"
    parts = [f'"inventory_client"."{column}" ILIKE %s' for column in SUBSTRING_COLUMNS]
    parts += [f'"inventory_client"."{column}" LIKE %s' for column in PREFIX_COLUMNS]
    params: list[Any] = [like] * len(SUBSTRING_COLUMNS) + [_like_escape(word) + "%"] * len(PREFIX_COLUMNS)
    if typos:
        parts += [f'%s <%% "inventory_client"."{column}"' for column in TYPO_COLUMNS]
        params += [word] * len(TYPO_COLUMNS)
    return "(" + " OR ".join(parts) + ")", params


def client_search(qs: QuerySet[Client], term: str) -> QuerySet[Client]:
    """Filter ``qs`` to clients matching free text ``term`` (2 small look-ups + one condition)."""
    term = " ".join(term.split())[:200]
    if not term:
        return qs
    owner_ids, team_ids = _people_matching(term)
    people = Q(owner_id__in=owner_ids) if owner_ids else Q(pk__in=[])
    if team_ids:
        people |= Q(team_id__in=team_ids)
    if not is_postgres():
        text = Q(purpose__icontains=term)
        for column in SUBSTRING_COLUMNS + PREFIX_COLUMNS:
            text |= Q(**{f"{column}__icontains": term})
        return qs.filter(text | people)
    parts = [f"{SEARCH_DOCUMENT_SQL} @@ websearch_to_tsquery('english'::regconfig, %s)"]
    params: list[Any] = [term]
    words = [w for w in term.split(" ") if len(w) >= 3]
    if len(words) > 1:
        # Several words: the whole phrase as a substring, or every word matching somewhere (typos allowed).
        phrase_sql, phrase_params = _word_condition(term, typos=False)
        parts.append(phrase_sql)
        params += phrase_params
        per_word = [_word_condition(w, typos=True) for w in words[:6]]
        parts.append("(" + " AND ".join(sql for sql, _ in per_word) + ")")
        for _, word_params in per_word:
            params += word_params
    else:
        word_sql, word_params = _word_condition(term, typos=len(term) >= 3)
        parts.append(word_sql)
        params += word_params
    # Only constant SQL fragments are joined here; the search term always travels as a parameter.
    text = RawSQL("(" + " OR ".join(parts) + ")", params, output_field=BooleanField())  # noqa: S611
    return qs.filter(Q(text) | people)


# --- explain this client -----------------------------------------------------------------------

_ANCESTORS_SQL = (
    "WITH RECURSIVE up(id, parent_id, n) AS ("
    " SELECT id, parent_id, 0 FROM inventory_client WHERE id = %s"
    " UNION ALL SELECT c.id, c.parent_id, up.n + 1 FROM inventory_client c JOIN up ON c.id = up.parent_id"
    " WHERE up.n < 64)"
    " SELECT id FROM up WHERE id <> %s"
)
_DESCENDANTS_SQL = (
    "WITH RECURSIVE down(id, parent_id, n) AS ("
    " SELECT id, parent_id, 0 FROM inventory_client WHERE parent_id = %s"
    " UNION ALL SELECT c.id, c.parent_id, down.n + 1 FROM inventory_client c JOIN down ON c.parent_id = down.id"
    " WHERE down.n < 64)"
    " SELECT id FROM down LIMIT %s"
)


@dataclass
class LineageNode:
    client: Client
    children: list[LineageNode] = field(default_factory=list)


def client_lineage(client: Client, *, limit: int = 200) -> dict[str, Any]:
    """Ancestors (root first) and the descendant tree of ``client``, in three queries."""
    with connection.cursor() as cursor:
        cursor.execute(_ANCESTORS_SQL, [client.pk, client.pk])
        ancestor_ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(_DESCENDANTS_SQL, [client.pk, limit + 1])
        descendant_ids = [row[0] for row in cursor.fetchall()]
    truncated = len(descendant_ids) > limit
    descendant_ids = descendant_ids[:limit]
    related = {c.pk: c for c in Client.objects.filter(pk__in=ancestor_ids + descendant_ids).select_related("owner")}
    ancestors = sorted((related[i] for i in ancestor_ids if i in related), key=lambda c: c.depth)
    nodes = {pk: LineageNode(related[pk]) for pk in descendant_ids if pk in related}
    root = LineageNode(client)
    nodes[client.pk] = root
    for pk in descendant_ids:
        node = nodes.get(pk)
        if node is not None and node.client.parent_id in nodes:
            nodes[node.client.parent_id].children.append(node)
    return {"ancestors": ancestors, "tree": root, "descendant_count": len(descendant_ids), "truncated": truncated}


def _lineage_json(node: LineageNode) -> dict[str, Any]:
    return {
        "registration_id": node.client.registration_id,
        "name": node.client.name,
        "state": node.client.state,
        "scopes": list(node.client.scopes),
        "children": [_lineage_json(child) for child in node.children],
    }


def client_explain(client: Client) -> dict[str, Any]:
    """Everything the explain page and the evidence pack show, in a fixed number of queries."""
    Request = apps.get_model("approvals", "RegistrationRequest")
    Decision = apps.get_model("approvals", "Decision")
    requests = list(
        Request.objects.filter(Q(public_id=client.registration_id) | Q(client=client))
        .select_related("token", "issuer", "owner")
        .order_by("created_at")
    )
    origin = next((r for r in requests if r.public_id == client.registration_id), requests[0] if requests else None)
    decisions_by_request: dict[int, list] = defaultdict(list)
    for decision in Decision.objects.filter(request__in=[r.pk for r in requests]).select_related("approver"):
        decisions_by_request[decision.request_id].append(decision)
    catalogue = {s.name: s for s in ScopeDefinition.objects.filter(name__in=list(client.scopes))}
    scopes = [
        {
            "name": name,
            "in_catalogue": name in catalogue,
            "sensitivity": catalogue[name].sensitivity if name in catalogue else None,
            "category": catalogue[name].category if name in catalogue else None,
            "description": catalogue[name].description if name in catalogue else "",
        }
        for name in client.scopes
    ]
    timeline = list(
        AuditEvent.objects.filter(object_type__in=TIMELINE_OBJECT_TYPES, object_id=client.registration_id).order_by(
            "id"
        )[:500]
    )
    outbox = list(OutboxEntry.objects.filter(client=client).order_by("-id")[:20])
    evidence = log_evidence(timeline)
    now = timezone.now()
    ceiling = TTL_CEILING_SECONDS.get(client.risk_tier)
    remaining = (client.expires_at - now).total_seconds() if client.expires_at else None
    ceiling_granted = Ceiling.of(
        scopes=client.ceiling_scopes, ttl_seconds=client.ceiling_ttl_seconds, audiences=client.ceiling_audiences
    )
    return {
        "client": client,
        "origin": origin,
        "requests": [{"request": r, "decisions": decisions_by_request.get(r.pk, [])} for r in requests],
        "scopes": scopes,
        "timeline": timeline,
        "log": evidence,
        "outbox": outbox,
        "lineage": client_lineage(client),
        "lifetime": {
            "ttl_ceiling_seconds": ceiling,
            "remaining_seconds": remaining,
            "within_ceiling": remaining is not None and ceiling is not None and remaining <= ceiling,
        },
        "is_live": client.state in LIVE_STATES,
        "ceiling": ceiling_granted,
        "ceiling_scopes": sorted(ceiling_granted.scopes) if ceiling_granted else [],
        "ceiling_audiences": sorted(ceiling_granted.audiences) if ceiling_granted else [],
        "ceiling_ttl": duration(ceiling_granted.ttl_seconds) if ceiling_granted else None,
        "owner_active": bool(client.owner and client.owner.is_active),
        "key_based_auth": client.auth_method in KEY_BASED_AUTH_METHODS,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def evidence_pack(client: Client, explain: dict[str, Any] | None = None) -> dict[str, Any]:
    """The explain page as JSON, for incident response. Secrets are never included (idp_state is omitted)."""
    data = explain or client_explain(client)
    owner, team, idp = client.owner, client.team, client.idp
    origin = data["origin"]
    lineage = data["lineage"]
    return {
        "schema": "registrar.evidence-pack/2",
        "generated_at": timezone.now().isoformat(),
        "client": {
            "registration_id": client.registration_id,
            "client_id": client.idp_client_id,
            "name": client.name,
            "state": client.state,
            "risk_tier": client.risk_tier,
            "created_via": client.created_via,
            "managed": client.managed,
            "software_id": client.software_id,
            "software_version": client.software_version,
            "spiffe_id": client.spiffe_id,
            "auth_method": client.auth_method,
            "jwks_uri": client.jwks_uri,
            "has_jwks": bool(client.jwks),
            "metadata": censor(client.metadata),
        },
        "purpose": client.purpose,
        "owner": {
            "username": owner.username if owner else None,
            "name": owner.display_name if owner else None,
            "active": bool(owner and owner.is_active),
            "deactivated_at": _iso(owner.deactivated_at) if owner else None,
        },
        "team": {"name": team.name, "slug": team.slug} if team else None,
        "sponsor": _sponsor_json(origin),
        "approval": [
            {
                "registration_id": item["request"].public_id,
                "kind": item["request"].kind,
                "state": item["request"].state,
                "outcome": item["request"].outcome,
                "policy_version": item["request"].policy_version,
                "risk_tier": item["request"].risk_tier,
                "reasons": item["request"].reasons,
                "approvals_needed": item["request"].approvals_needed,
                "created_at": _iso(item["request"].created_at),
                "decided_at": _iso(item["request"].decided_at),
                "decision_reason": item["request"].decision_reason,
                "decisions": [
                    {
                        "approver": d.approver.username,
                        "kind": d.kind,
                        "reason": d.reason,
                        "at": _iso(d.created_at),
                    }
                    for d in item["decisions"]
                ],
            }
            for item in data["requests"]
        ],
        "policy_version": client.policy_version,
        "scopes": data["scopes"],
        "service_boundary": {"audiences": list(client.audiences), "internal_only": client.internal_only},
        "lifetime": {
            "created_at": _iso(client.created_at),
            "activated_at": _iso(client.activated_at),
            "expires_at": _iso(client.expires_at),
            "ended_at": _iso(client.ended_at),
            "renewals": client.renewals,
            "ttl_ceiling_seconds": data["lifetime"]["ttl_ceiling_seconds"],
            "remaining_seconds": data["lifetime"]["remaining_seconds"],
            "last_used_at": _iso(client.last_used_at),
            "approved_ceiling": data["ceiling"].to_dict() if data["ceiling"] is not None else None,
        },
        "revocation": {
            "idp": idp.name,
            "idp_kind": idp.kind,
            "issuer": idp.issuer,
            "idp_client_id": client.idp_client_id,
            "last_synced_at": _iso(client.last_synced_at),
            "sync_failed": client.sync_failed,
            "drift": client.drift,
            "idp_disabled_at": _iso(client.idp_disabled_at),
            "containment": {
                "hold": {
                    "kind": client.hold_kind,
                    "by": client.hold_by.get_username() if client.hold_by_id and client.hold_by else None,
                    "at": _iso(client.hold_at),
                    "reason": client.hold_reason,
                    "ref": client.hold_ref,
                }
                if client.hold_kind
                else None,
                "can_spawn": client.spawn_revoked_at is None,
                "spawn_revoked_at": _iso(client.spawn_revoked_at),
                "spawn_revoked_reason": client.spawn_revoked_reason or None,
                "children_spawned": client.children_spawned,
            },
            "outbox": [
                {
                    "operation": e.operation,
                    "status": e.status,
                    "attempts": e.attempts,
                    "created_at": _iso(e.created_at),
                    "delivered_at": _iso(e.delivered_at),
                }
                for e in data["outbox"]
            ],
        },
        "lineage": {
            "depth": client.depth,
            "parent": client.parent.registration_id if client.parent_id else None,
            "ancestors": [a.registration_id for a in lineage["ancestors"]],
            "descendants": _lineage_json(lineage["tree"])["children"],
            "truncated": lineage["truncated"],
        },
        "flags": {
            "orphaned_at": _iso(client.orphaned_at),
            "stale_at": _iso(client.stale_at),
            "discovered_at": _iso(client.discovered_at),
        },
        "log_witness": {
            "witnessed_at": _iso(data["log"].witnessed_at),
            "witness": data["log"].witness or None,
        },
        # Each event with its log entry (the exact bytes the log hashed) and its inclusion proof, then the
        # signed checkpoint they prove against: tools/verify_evidence.py checks both sections offline, with the
        # log's public key, and that every field shown here is what the entry says.
        "timeline": [_timeline_json(e, data["log"]) for e in data["timeline"]],
        "log": {"checkpoint": data["log"].checkpoint.note if data["log"].checkpoint else None},
    }


def _timeline_json(e, evidence) -> dict[str, Any]:
    proof = evidence.proofs.get(e.id)
    return {
        "id": e.id,
        "at": e.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": {"type": e.actor_type, "id": e.actor_id, "label": e.actor_label},
        "action": e.action,
        "object": f"{e.object_type}:{e.object_id}",
        "before": e.before,
        "after": e.after,
        "reason": e.reason,
        "policy_version": e.policy_version,
        "request_id": e.request_id,
        "hash": e.hash,
        "prev_hash": e.prev_hash,
        "log_index": proof.log_index if proof else None,
        "leaf": b64(proof.leaf) if proof else None,
        "inclusion_proof": [b64(h) for h in proof.proof] if proof else None,
    }


def _sponsor_json(origin) -> dict[str, Any] | None:
    if origin is None:
        return None
    token, issuer = origin.token, origin.issuer
    return {
        "via": origin.via,
        "token": {"prefix": token.prefix, "purpose": token.purpose, "owner": token.owner_id} if token else None,
        "software_statement_issuer": {"name": issuer.name, "issuer": issuer.issuer, "subject": origin.statement_subject}
        if issuer
        else None,
    }


# --- dashboard -------------------------------------------------------------------------------

DASHBOARD_DAYS = 90


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _percentiles_sql(table: str, expression: str, where: str, params: list, fractions: tuple[float, ...]):
    select = ", ".join(f"percentile_cont({f}) WITHIN GROUP (ORDER BY {expression})" for f in fractions)
    with connection.cursor() as cursor:
        # table/expression/where are constants of this module; values travel as parameters.
        cursor.execute(f"SELECT {select} FROM {table} WHERE {where}", params)  # noqa: S608
        return [float(v) if v is not None else None for v in cursor.fetchone()]


def dashboard_data(*, now: datetime | None = None, days: int = DASHBOARD_DAYS) -> dict[str, Any]:
    """Sprawl numbers. A fixed number of indexed aggregate queries, whatever the inventory size.

    Live clients per day is derived backwards from today's live count: live(end of day d) =
    live_now − created after d + ended after d, so only the last ``days`` days of rows are read.
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    start = timezone.make_aware(datetime.combine(today - timedelta(days=days - 1), datetime.min.time()))
    day_list = [today - timedelta(days=days - 1 - i) for i in range(days)]
    clients = Client.objects.all()

    breakdown = live_breakdown(now) if is_postgres() else _live_breakdown_orm(now)
    totals = breakdown["totals"]
    created = dict(
        clients.filter(created_at__gte=start)
        .annotate(day=TruncDay("created_at"))
        .values("day")
        .annotate(n=Count("*"))
        .values_list("day", "n")
    )
    ended = dict(
        # ended_at is only ever set on ended clients: no state filter, so this is an index-only scan
        clients.filter(ended_at__gte=start)
        .annotate(day=TruncDay("ended_at"))
        .values("day")
        .annotate(n=Count("*"))
        .values_list("day", "n")
    )
    created = _by_date(created)
    ended = _by_date(ended)
    live_series = []
    running = totals["live"]
    for day in reversed(day_list):
        live_series.append(running)
        running = running - created.get(day, 0) + ended.get(day, 0)
    live_series.reverse()

    by_tier, depth = breakdown["by_tier"], breakdown["depth"]

    Request = apps.get_model("approvals", "RegistrationRequest")
    outcome_rows = (
        Request.objects.filter(created_at__gte=start)
        .annotate(day=TruncDay("created_at"))
        .values("day", "state", "outcome")
        .annotate(n=Count("pk"))
    )
    outcomes = {key: Counter() for key in ("auto-approved", "human-approved", "denied", "refused")}
    for row in outcome_rows:
        label = _outcome_label(row["state"], row["outcome"])
        if label:
            outcomes[label][_as_date(row["day"])] += row["n"]
    total_auto = sum(outcomes["auto-approved"].values())
    total_decided = sum(sum(c.values()) for c in outcomes.values())

    ttd = _time_to_decision(Request, start)
    overshoot_p99 = _overshoot_p99()

    return {
        "generated_at": now,
        "days": days,
        "totals": totals,
        "live_series": {"labels": [d.isoformat() for d in day_list], "values": live_series},
        "registrations": {
            "labels": [d.isoformat() for d in day_list],
            "series": {label: [counter.get(d, 0) for d in day_list] for label, counter in outcomes.items()},
            "totals": {label: sum(counter.values()) for label, counter in outcomes.items()},
        },
        "by_tier": [(tier.value, by_tier.get(tier.value, 0)) for tier in RiskTier],
        "by_idp": breakdown["by_idp"],
        "by_team": [(name or "(no team)", n) for name, n in breakdown["by_team"]],
        "top_owners": [(name or "(no owner)", n) for name, n in breakdown["top_owners"]],
        "depth": sorted(depth.items()),
        "time_to_decision": ttd,
        "auto_approval_ratio": (total_auto / total_decided) if total_decided else None,
        "expiry_overshoot_p99": overshoot_p99,
    }


_LIVE_BREAKDOWN_SQL = """
SELECT GROUPING(risk_tier, idp_id, team_id, owner_id, depth) AS g, risk_tier, idp_id, team_id, owner_id, depth,
       count(*) AS n,
       count(*) FILTER (WHERE orphaned_at IS NOT NULL) AS orphaned,
       count(*) FILTER (WHERE stale_at IS NOT NULL) AS stale,
       count(*) FILTER (WHERE NOT managed) AS unmanaged,
       count(*) FILTER (WHERE sync_failed) AS sync_failed,
       count(*) FILTER (WHERE expires_at >= %(now)s AND expires_at < %(week)s) AS expiring_7d
FROM inventory_client
WHERE state IN ('provisioning', 'active', 'suspended')
GROUP BY GROUPING SETS ((), (risk_tier), (idp_id), (team_id), (owner_id), (depth))
"""
# GROUPING() bit per column (1 = not grouped), in the order risk_tier, idp_id, team_id, owner_id, depth.
_GROUPED_BY = {
    0b01111: "risk_tier",
    0b10111: "idp_id",
    0b11011: "team_id",
    0b11101: "owner_id",
    0b11110: "depth",
    0b11111: "total",
}


def live_breakdown(now: datetime) -> dict[str, Any]:
    """Live clients counted by tier, IdP, team, owner and depth plus the flag totals: ONE scan (GROUPING SETS),
    then names for the few ids shown (three primary-key look-ups)."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_BREAKDOWN_SQL, {"now": now, "week": now + timedelta(days=7)})
        rows = cursor.fetchall()
    groups: dict[str, dict] = defaultdict(dict)
    totals = {"live": 0, "orphaned": 0, "stale": 0, "unmanaged": 0, "sync_failed": 0, "expiring_7d": 0}
    for g, tier, idp_id, team_id, owner_id, depth, n, orphaned, stale, unmanaged, sync_failed, expiring in rows:
        kind = _GROUPED_BY[g]
        if kind == "total":
            totals = {
                "live": n,
                "orphaned": orphaned,
                "stale": stale,
                "unmanaged": unmanaged,
                "sync_failed": sync_failed,
                "expiring_7d": expiring,
            }
        else:
            key = {"risk_tier": tier, "idp_id": idp_id, "team_id": team_id, "owner_id": owner_id, "depth": depth}[kind]
            groups[kind][key] = n

    def top(kind: str, limit: int) -> list[tuple[Any, int]]:
        return sorted(groups[kind].items(), key=lambda kv: (-kv[1], str(kv[0])))[:limit]

    idps, teams, owners = top("idp_id", 20), top("team_id", 15), top("owner_id", 10)
    idp_names = dict(IdPConnection.objects.filter(pk__in=[k for k, _ in idps]).values_list("pk", "name"))
    team_names = dict(Team.objects.filter(pk__in=[k for k, _ in teams if k]).values_list("pk", "name"))
    owner_names = dict(
        get_user_model().objects.filter(pk__in=[k for k, _ in owners if k]).values_list("pk", "username")
    )
    return {
        "totals": totals,
        "by_tier": groups["risk_tier"],
        "depth": groups["depth"],
        "by_idp": sorted(((idp_names.get(k, str(k)), n) for k, n in idps), key=lambda kv: (-kv[1], kv[0])),
        "by_team": sorted(((team_names.get(k), n) for k, n in teams), key=lambda kv: (-kv[1], kv[0] or "")),
        "top_owners": sorted(((owner_names.get(k), n) for k, n in owners), key=lambda kv: (-kv[1], kv[0] or "")),
    }


def _live_breakdown_orm(now: datetime) -> dict[str, Any]:
    """The same numbers with portable ORM queries (SQLite has no GROUPING SETS)."""
    live = Client.objects.filter(state__in=LIVE_STATES)
    totals = live.aggregate(
        live=Count("pk"),
        orphaned=Count("pk", filter=Q(orphaned_at__isnull=False)),
        stale=Count("pk", filter=Q(stale_at__isnull=False)),
        unmanaged=Count("pk", filter=Q(managed=False)),
        sync_failed=Count("pk", filter=Q(sync_failed=True)),
        expiring_7d=Count("pk", filter=Q(expires_at__gte=now, expires_at__lt=now + timedelta(days=7))),
    )
    return {
        "totals": totals,
        "by_tier": dict(live.values("risk_tier").annotate(n=Count("pk")).values_list("risk_tier", "n")),
        "depth": dict(live.values("depth").annotate(n=Count("pk")).order_by("depth").values_list("depth", "n")),
        "by_idp": [
            (r["idp__name"], r["n"])
            for r in live.values("idp__name").annotate(n=Count("pk")).order_by("-n", "idp__name")[:20]
        ],
        "by_team": [
            (r["team__name"], r["n"])
            for r in live.values("team__name").annotate(n=Count("pk")).order_by("-n", "team__name")[:15]
        ],
        "top_owners": [
            (r["owner__username"], r["n"])
            for r in live.values("owner__username").annotate(n=Count("pk")).order_by("-n", "owner__username")[:10]
        ],
    }


def _as_date(value):
    return value.date() if isinstance(value, datetime) else value


def _by_date(mapping: dict) -> dict:
    out: dict = defaultdict(int)
    for key, n in mapping.items():
        out[_as_date(key)] += n
    return out


def _outcome_label(state: str, outcome: str) -> str | None:
    if state == "approved":
        return "auto-approved" if outcome == "auto_approve" else "human-approved"
    if state == "denied":
        return "denied"
    if state == "refused":
        return "refused"
    return None


def _time_to_decision(Request, start: datetime) -> dict[str, float | None]:
    """Median and p90 seconds from submission to a human decision (requests decided in the window)."""
    human = Request.objects.filter(decided_at__gte=start, state__in=("approved", "denied")).exclude(
        outcome="auto_approve"
    )
    if is_postgres():
        median, p90 = _percentiles_sql(
            Request._meta.db_table,
            "EXTRACT(EPOCH FROM (decided_at - created_at))",
            "decided_at >= %s AND state IN ('approved', 'denied') AND outcome <> 'auto_approve'",
            [start],
            (0.5, 0.9),
        )
        return {"median_seconds": median, "p90_seconds": p90}
    values = [(decided - created).total_seconds() for created, decided in human.values_list("created_at", "decided_at")]
    return {"median_seconds": statistics.median(values) if values else None, "p90_seconds": _percentile(values, 0.9)}


def _overshoot_p99() -> float | None:
    if is_postgres():
        (p99,) = _percentiles_sql(
            Client._meta.db_table, "expiry_overshoot_seconds", "expiry_overshoot_seconds IS NOT NULL", [], (0.99,)
        )
        return p99
    values = list(
        Client.objects.filter(expiry_overshoot_seconds__isnull=False).values_list("expiry_overshoot_seconds", flat=True)
    )
    return _percentile(values, 0.99)


def chart(kind: str, labels: list, datasets: dict[str, list]) -> dict[str, Any]:
    """The frontend's Chart.js contract: {"type","labels","datasets":[{"label","data"}]}."""
    return {
        "type": kind,
        "labels": [str(label) for label in labels],
        "datasets": [{"label": label, "data": list(data)} for label, data in datasets.items()],
    }


def dashboard_charts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Chart specs keyed by chart id; each also serves the table and the CSV of its numbers."""
    return {
        "live-over-time": chart("line", data["live_series"]["labels"], {"Live clients": data["live_series"]["values"]}),
        "registrations-by-outcome": chart("bar", data["registrations"]["labels"], data["registrations"]["series"]),
        "live-by-tier": chart(
            "doughnut", [t for t, _ in data["by_tier"]], {"Live clients": [n for _, n in data["by_tier"]]}
        ),
        "live-by-idp": chart("bar", [i for i, _ in data["by_idp"]], {"Live clients": [n for _, n in data["by_idp"]]}),
        "live-by-team": chart(
            "bar", [t for t, _ in data["by_team"]], {"Live clients": [n for _, n in data["by_team"]]}
        ),
        "top-owners": chart(
            "bar", [o for o, _ in data["top_owners"]], {"Live clients": [n for _, n in data["top_owners"]]}
        ),
        "lineage-depth": chart(
            "bar", [str(d) for d, _ in data["depth"]], {"Live clients": [n for _, n in data["depth"]]}
        ),
    }


CHART_TITLES = {
    "live-over-time": "Live clients over time (end of day, last 90 days)",
    "registrations-by-outcome": "Registrations per day by outcome",
    "live-by-tier": "Live clients by risk tier",
    "live-by-idp": "Live clients by IdP",
    "live-by-team": "Live clients by team (top 15)",
    "top-owners": "Top owners by live clients",
    "lineage-depth": "Lineage depth distribution (live clients)",
}
