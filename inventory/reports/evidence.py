"""The evidence pack: the explain page as JSON, for incident response — provable byte for byte.

Secrets are never included (``idp_state`` is omitted, metadata is censored). Exporting a pack is itself an
audit event, ``client.evidence_exported`` by the person who asked: its ``after`` holds the SHA-256 of every
section of the pack but ``log`` (and of each section alone), over their canonical JSON (RFC 8785 style,
:mod:`portal.tlog.jcs`). The event is sealed before the pack is handed out, and the ``log`` section carries it
with its leaf and inclusion proof, the same for every timeline event, and the signed checkpoint they are
proven against — so ``tools/verify_evidence.py`` proves, offline and with the log's public key alone, that the
whole pack is what Registrar exported (and logged) and that each timeline event is in the log.

The file is ``json.dumps(pack, indent=2)`` plus a newline, exactly: the verifier writes the content back the
same way and refuses any other layout, so not even whitespace can change unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from inventory.models import Client
from inventory.selectors.explain import LineageNode, client_explain
from portal.audit import Actor, audit_record, censor
from portal.logs import log_event
from portal.models import AuditEvent
from portal.tlog.evidence import LogEvidence, b64, log_evidence
from portal.tlog.jcs import canonical_json
from portal.tlog.sequencer import LogStateError, log_seal_through

logger = logging.getLogger(__name__)

PACK_SCHEMA = "registrar.evidence-pack/3"
EXPORT_ACTION = "client.evidence_exported"
# How long an export waits for the sequencer when another one holds the lock (it normally seals in well under
# a second); past it the pack says the export event is not sealed yet and to fetch it again.
EXPORT_SEAL_TIMEOUT = 3.0


def pack_digests(body: dict[str, Any]) -> dict[str, Any]:
    """What the export event logs about ``body`` (the pack without ``log``): the SHA-256 of its canonical JSON,
    and of each section's, so a verifier can name the section that changed."""
    return {
        "schema": body["schema"],
        "sha256": hashlib.sha256(canonical_json(body)).hexdigest(),
        "sections": {name: hashlib.sha256(canonical_json(value)).hexdigest() for name, value in body.items()},
    }


def pack_bytes(pack: dict[str, Any]) -> bytes:
    """The file, byte for byte as ``tools/verify_evidence.py`` expects it (it re-serialises and compares)."""
    return (json.dumps(pack, indent=2) + "\n").encode("ascii")


def evidence_export(*, client: Client, actor: Actor, seal_timeout: float = EXPORT_SEAL_TIMEOUT) -> bytes:
    """Build ``client``'s evidence pack for ``actor``, log the export, seal it, and return the file.

    The one write here is the export's audit event (its own transaction, committed before sealing: the
    sequencer only takes committed events). Sealing runs inline, bounded by ``seal_timeout``; when it cannot
    finish the pack still goes out, saying its export event is not sealed yet."""
    explain = client_explain(client)
    body = evidence_body(client, explain)
    with transaction.atomic():
        event = audit_record(
            actor=actor,
            action=EXPORT_ACTION,
            object_type="client",
            object_id=client.registration_id,
            after=pack_digests(body),
        )
    try:
        log_seal_through(event.id, timeout=seal_timeout)
    except LogStateError:
        log_event(
            logger,
            "evidence_export_unsealed",
            level=logging.ERROR,
            registration_id=client.registration_id,
            exc_info=True,
        )
    ids = [e.id for e in explain["timeline"]]
    fresh = {e.id: e for e in AuditEvent.objects.filter(pk__in=[*ids, event.id])}  # with their log indexes now
    evidence = log_evidence([fresh[i] for i in ids] + [fresh[event.id]])
    pack = {**body, "log": _log_json(evidence, [fresh[i] for i in ids], fresh[event.id])}
    return pack_bytes(pack)


def _log_json(evidence: LogEvidence, timeline: list[AuditEvent], export: AuditEvent) -> dict[str, Any]:
    return {
        "checkpoint": evidence.checkpoint.note if evidence.checkpoint else None,
        "export": {"event": _event_json(export), **_proof_json(evidence, export)},
        "entries": [{"id": e.id, **_proof_json(evidence, e)} for e in timeline],
    }


def _proof_json(evidence: LogEvidence, event: AuditEvent) -> dict[str, Any]:
    proof = evidence.proofs.get(event.id)
    return {
        "log_index": proof.log_index if proof else None,
        "leaf": b64(proof.leaf) if proof else None,
        "inclusion_proof": [b64(h) for h in proof.proof] if proof else None,
    }


def _lineage_json(node: LineageNode) -> dict[str, Any]:
    return {
        "registration_id": node.client.registration_id,
        "name": node.client.name,
        "state": node.client.state,
        "scopes": list(node.client.scopes),
        "children": [_lineage_json(child) for child in node.children],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def evidence_body(client: Client, explain: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every section of the pack but ``log``, as plain JSON values (what the export event's digests cover)."""
    data = explain or client_explain(client)
    owner, team, idp = client.owner, client.team, client.idp
    origin = data["origin"]
    lineage = data["lineage"]
    body = {
        "schema": PACK_SCHEMA,
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
                "registration_id": item["reg_request"].public_id,
                "kind": item["reg_request"].kind,
                "state": item["reg_request"].state,
                "outcome": item["reg_request"].outcome,
                "policy_version": item["reg_request"].policy_version,
                "risk_tier": item["reg_request"].risk_tier,
                "reasons": item["reg_request"].reasons,
                "approvals_needed": item["reg_request"].approvals_needed,
                "created_at": _iso(item["reg_request"].created_at),
                "decided_at": _iso(item["reg_request"].decided_at),
                "decision_reason": item["reg_request"].decision_reason,
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
            for item in data["reg_requests"]
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
            "parent": client.parent.registration_id if client.parent is not None else None,
            "ancestors": [a.registration_id for a in lineage["ancestors"]],
            "descendants": _lineage_json(lineage["tree"])["children"],
            "truncated": lineage["truncated"],
        },
        "flags": {
            "orphaned_at": _iso(client.orphaned_at),
            "stale_at": _iso(client.stale_at),
            "discovered_at": _iso(client.discovered_at),
        },
        # The events as the log recorded them; their leaves and proofs are in the pack's "log" section.
        "timeline": [_event_json(e) for e in data["timeline"]],
    }
    # Plain JSON values (datetimes as text…), exactly what the file will hold and a verifier will parse.
    return json.loads(json.dumps(body, cls=DjangoJSONEncoder))


def _event_json(e: AuditEvent) -> dict[str, Any]:
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
