"""Inventory writes other than state transitions (those live in inventory.lifecycle)."""

from __future__ import annotations

import math
import secrets
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from inventory.choices import ClientState, CreatedVia, OutboxOperation, RiskTier
from inventory.lifecycle import client_snapshot
from inventory.models import Client, IdPConnection, Team
from inventory.outbox import outbox_enqueue
from portal.audit import Actor, audit_record


def new_registration_id() -> str:
    """Registrar's opaque id for a registration and the client it becomes."""
    return "reg_" + secrets.token_urlsafe(15)


@transaction.atomic
def client_create(
    *,
    actor: Actor,
    idp: IdPConnection,
    name: str,
    owner,
    purpose: str,
    scopes: list[str],
    expires_at: datetime,
    team: Team | None = None,
    registration_id: str | None = None,
    risk_tier: str = RiskTier.LOW,
    created_via: str = CreatedVia.ADMIN,
    policy_version: int | None = None,
    metadata: dict | None = None,
    audiences: list[str] | None = None,
    internal_only: bool = False,
    auth_method: str = "private_key_jwt",
    jwks: dict | None = None,
    jwks_uri: str = "",
    software_id: str = "",
    software_version: str = "",
    spiffe_id: str = "",
    parent: Client | None = None,
    reason: str = "",
    provision: bool = True,
    ceiling_ttl_seconds: int | None = None,
    nudge_worker: bool = True,
) -> Client:
    """Create a client in ``provisioning`` and queue its creation at the IdP (one transaction).

    Whoever calls this approved the client: its scopes, audiences and lifetime (``ceiling_ttl_seconds``,
    else the time until ``expires_at``) become its approved ceiling for renewals.

    ``nudge_worker=False`` when the caller delivers the entry itself right after the commit (the intake's inline
    201 path): a worker nudged at the same moment would race it for the entry and turn the 201 into a 202.
    """
    now = timezone.now()
    if ceiling_ttl_seconds is None:
        ceiling_ttl_seconds = max(1, math.ceil((expires_at - now).total_seconds()))
    scopes = sorted(set(scopes))
    audiences = list(audiences or [])
    client = Client.objects.create(
        registration_id=registration_id or new_registration_id(),
        idp=idp,
        name=name,
        owner=owner,
        team=team,
        purpose=purpose,
        scopes=scopes,
        audiences=audiences,
        internal_only=internal_only,
        metadata=dict(metadata or {}),
        auth_method=auth_method,
        jwks=jwks,
        jwks_uri=jwks_uri or "",
        software_id=software_id or "",
        software_version=software_version or "",
        spiffe_id=spiffe_id or "",
        parent=parent,
        depth=(parent.depth + 1) if parent else 0,
        risk_tier=risk_tier,
        state=ClientState.PROVISIONING,
        created_via=created_via,
        policy_version=policy_version,
        expires_at=expires_at,
        state_changed_at=now,
        ceiling_scopes=list(scopes),
        ceiling_ttl_seconds=ceiling_ttl_seconds,
        ceiling_audiences=list(audiences),
    )
    audit_record(
        actor=actor,
        action="client.create",
        object_type="client",
        object_id=client.registration_id,
        after=client_snapshot(client) | {"idp": idp.name, "created_via": created_via, "purpose": purpose},
        reason=reason,
        policy_version=policy_version,
    )
    if provision:
        outbox_enqueue(client=client, operation=OutboxOperation.CREATE, deliver_after_commit=nudge_worker)
    return client
