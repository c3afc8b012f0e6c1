"""The JSON bodies of a successful registration: RFC 7591 §3.2.1 client information (201, and RFC 7592 read and
update) and the 202 body of a registration that is pending review or still provisioning."""

from __future__ import annotations

from typing import Any

from approvals.models import RegistrationRequest
from inventory.choices import IdPKind
from inventory.models import Client


def _epoch(value) -> int | None:
    return int(value.timestamp()) if value is not None else None


def client_information(
    *, reg_request: RegistrationRequest, client: Client, registration_access_token: str, registration_client_uri: str
) -> dict[str, Any]:
    """The RFC 7591 §3.2.1 client information response (also RFC 7592 read/update)."""
    info: dict[str, Any] = {
        "client_id": client.idp_client_id,
        "client_id_issued_at": _epoch(client.activated_at or client.created_at),
        "registration_access_token": registration_access_token,
        "registration_client_uri": registration_client_uri,
    }
    metadata = dict(client.metadata or {})
    metadata["scope"] = " ".join(client.scopes or ())
    metadata.pop("requested_ttl", None)
    info.update(metadata)
    info.update(
        {
            "expires_at": _epoch(client.expires_at),
            "issuer": client.idp.issuer,
            "token_endpoint": client.idp.token_endpoint,
            "registration_id": reg_request.public_id,
            "status": client.state,
            "risk_tier": client.risk_tier,
            "policy_version": client.policy_version,
        }
    )
    if client.idp.kind == IdPKind.DRY_RUN:
        info["dry_run"] = True  # nothing was created at a real IdP: say so to the agent
    return info


def pending_information(
    *, reg_request: RegistrationRequest, registration_access_token: str, registration_client_uri: str, status: str
) -> dict[str, Any]:
    """The 202 body: where to poll and with which token."""
    return {
        "status": status,
        "registration_id": reg_request.public_id,
        "registration_client_uri": registration_client_uri,
        "registration_access_token": registration_access_token,
        "risk_tier": reg_request.risk_tier,
        "approvals_needed": reg_request.approvals_needed,
        "policy_version": reg_request.policy_version,
        "reasons": [r["message"] for r in reg_request.reasons or []],
    }
