"""The evidence pack: the explain page as JSON, for incident response.

Secrets are never included (``idp_state`` is omitted, metadata is censored). Each timeline event carries its
log entry and inclusion proof, so ``tools/verify_evidence.py`` checks the pack offline.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from inventory.models import Client
from inventory.selectors.explain import LineageNode, client_explain
from portal.audit import censor
from portal.tlog.evidence import b64


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
