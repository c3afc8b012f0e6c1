"""What "explain this client" shows: where it came from, who approved it, what it may do, how long it lives, its lineage.

Everything here is a read, in a fixed number of queries whatever the client's history. The registration and
renewal requests and their decisions belong to the approvals app: it provides them through
``inventory.hooks.registration_history`` (inventory never imports approvals). The same data as JSON for
incident response is the evidence pack (``inventory.reports.evidence``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from inventory import hooks
from inventory.ceilings import DEFAULT_TTL_CEILINGS, Ceiling, duration
from inventory.choices import LIVE_STATES, CreatedVia
from inventory.keys import KEY_BASED_METHODS
from inventory.models import Client, OutboxEntry, ScopeDefinition
from portal.models import AuditEvent
from portal.tlog.evidence import log_evidence

TIMELINE_OBJECT_TYPES = ("client", "registration_request")

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


def client_explain(client: Client) -> dict[str, Any]:
    """Everything the explain page and the evidence pack show, in a fixed number of queries."""
    history = hooks.registration_history(client)
    origin = next(
        (h.reg_request for h in history if h.reg_request.public_id == client.registration_id),
        history[0].reg_request if history else None,
    )
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
    ceiling = DEFAULT_TTL_CEILINGS.get(client.risk_tier)
    remaining = (client.expires_at - now).total_seconds() if client.expires_at else None
    ceiling_granted = Ceiling.of(
        scopes=client.ceiling_scopes, ttl_seconds=client.ceiling_ttl_seconds, audiences=client.ceiling_audiences
    )
    return {
        "client": client,
        "origin": origin,
        "reg_requests": [{"reg_request": h.reg_request, "decisions": list(h.decisions)} for h in history],
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
        "key_based_auth": client.auth_method in KEY_BASED_METHODS,
        # Only CIMD clients have one: no query for the others.
        "cimd_pin": hooks.metadata_document_pin(client) if client.created_via == CreatedVia.CIMD else None,
    }
