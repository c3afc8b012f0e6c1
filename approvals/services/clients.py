"""The client an approved registration request becomes: the one mapping from request to client."""

from __future__ import annotations

from datetime import timedelta

from approvals.cimd.pinning import pin_create
from approvals.models import RegistrationRequest
from inventory.choices import RiskTier
from inventory.models import Client, IdPConnection
from inventory.quotas import owner_quota_hold
from inventory.services import client_adopt, client_create
from portal.audit import Actor


def request_client_create(
    *,
    reg_request: RegistrationRequest,
    idp: IdPConnection,
    actor: Actor,
    reason: str,
    now,
    owner_limit: int | None = None,
    nudge_worker: bool = True,
) -> Client:
    """The client an approved registration request becomes, in ``provisioning`` with its outbox CREATE.

    The one mapping from request to client: used by policy auto-approval (``approvals.oauth2.register``) and by
    the final human approval, so both paths produce the same client for the same request. What was approved — the granted
    scopes, the granted lifetime, the audiences — becomes the client's approved ceiling: renewing inside it
    may be direct, beyond it needs people again. Runs in the caller's transaction, which must not have appended
    to the audit chain yet: it first takes the owner's quota lock and raises OwnerQuotaExceeded (nothing
    written) when the owner has no room left (``inventory.quotas``). ``owner_limit`` defaults to the active
    policy's ``max_live_clients_per_owner``. ``nudge_worker=False``: the caller delivers the CREATE itself after
    the commit (see ``client_create``). A CIMD request's document, hash and keys are pinned to the client.
    """
    ttl = reg_request.granted_ttl
    if ttl is None:  # set by every approval (policy or people): a request without one was never decided
        raise ValueError(
            f"request {reg_request.public_id} has no granted TTL; only an approved request becomes a client"
        )
    owner_quota_hold(owner_id=reg_request.owner_id, limit=owner_limit)
    metadata = dict(reg_request.metadata or {})
    if reg_request.cimd_url:  # the IdP knows a CIMD client by its document URL (inventory.outbox.push.client_spec)
        metadata["client_id"] = reg_request.cimd_url
    spiffe_id = reg_request.statement_subject if reg_request.statement_subject.startswith("spiffe://") else ""
    client = client_create(
        actor=actor,
        idp=idp,
        name=reg_request.client_name or metadata.get("client_name") or f"agent {reg_request.public_id}",
        owner=reg_request.owner,
        team=reg_request.team,
        purpose=reg_request.purpose,
        scopes=list(reg_request.granted_scopes or reg_request.requested_scopes),
        expires_at=now + timedelta(seconds=ttl),
        registration_id=reg_request.public_id,
        risk_tier=reg_request.risk_tier or RiskTier.MEDIUM,
        created_via=reg_request.via,
        policy_version=reg_request.policy_version,
        metadata=metadata,
        audiences=list(reg_request.audiences or []),
        internal_only=reg_request.internal_only,
        auth_method=metadata.get("token_endpoint_auth_method") or "private_key_jwt",
        jwks=metadata.get("jwks") or reg_request.fetched_jwks,  # keys behind a jwks_uri: as fetched and vetted
        jwks_uri=metadata.get("jwks_uri") or "",
        software_id=reg_request.software_id,
        software_version=metadata.get("software_version") or "",
        spiffe_id=spiffe_id,
        nudge_worker=nudge_worker,
        parent=reg_request.parent_client,
        reason=reason,
        ceiling_ttl_seconds=ttl,
    )
    if reg_request.cimd_url and reg_request.cimd_document is not None:
        pin_create(client=client, reg_request=reg_request, now=now)  # docs/cimd.md "Pinning and drift"
    return client


def request_client_adopt(*, reg_request: RegistrationRequest, actor: Actor, reason: str, now) -> Client:
    """An approved adoption (``RequestKind.ADOPTION``): the shadow client named by the request becomes managed in
    place (``inventory.services.client_adopt``) with what was approved, as ``request_client_create`` maps it for a
    new client. Raises NotAdoptable (nothing written) or OwnerQuotaExceeded (the owner has no room left)."""
    ttl = reg_request.granted_ttl
    if ttl is None or reg_request.client is None:
        raise ValueError(f"request {reg_request.public_id} is not an approved adoption of a client")
    owner_quota_hold(owner_id=reg_request.owner_id)
    metadata = dict(reg_request.metadata or {})
    return client_adopt(
        client=reg_request.client,
        actor=actor,
        owner=reg_request.owner,
        team=reg_request.team,
        purpose=reg_request.purpose,
        scopes=list(reg_request.granted_scopes or reg_request.requested_scopes),
        expires_at=now + timedelta(seconds=ttl),
        risk_tier=reg_request.risk_tier or RiskTier.MEDIUM,
        created_via=reg_request.via,
        policy_version=reg_request.policy_version,
        metadata=metadata,
        audiences=list(reg_request.audiences or []),
        internal_only=reg_request.internal_only,
        auth_method=metadata.get("token_endpoint_auth_method") or "private_key_jwt",
        jwks=metadata.get("jwks") or reg_request.fetched_jwks,
        jwks_uri=metadata.get("jwks_uri") or "",
        software_id=reg_request.software_id,
        software_version=metadata.get("software_version") or "",
        reason=reason,
        ceiling_ttl_seconds=ttl,
        adopted_by_request=reg_request.public_id,
    )
