"""Inventory writes other than state transitions (those live in inventory.lifecycle)."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.choices import ENDED_STATES, ClientState, CreatedVia, OutboxOperation, RiskTier
from inventory.keys import jwks_thumbprints
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


@transaction.atomic
def client_narrow(
    *,
    client: Client,
    actor: Actor,
    scopes: Iterable[str],
    expires_at_most: datetime | None,
    metadata: dict[str, Any],
    name: str | None,
    auth_method: str,
    jwks: dict | None,
    jwks_uri: str,
    software_version: str,
    keys_audit: dict[str, Any],
    reason: str,
    policy_version: int | None = None,
    action: str = "client.narrow",
) -> Client:
    """Narrow a client and replace its registered metadata and keys; returns the updated row.

    For an update its caller has judged narrowing (RFC 7592 PUT by the agent, ``approvals.oauth2.client_config``):
    the client keeps only those of its scopes that are in ``scopes``, its expiry moves to ``expires_at_most`` if
    that is sooner, and its metadata (its ``scope`` set to the kept scopes), name, auth method and keys are
    replaced. One ``client.narrow`` audit event (``keys_audit`` says where the keys came from); the IdP is
    updated through the outbox. ``policy_version`` defaults to the client's. ``action`` names the audit event
    (an approved change of a CIMD client's document keeps its scopes but is no narrowing: ``client.cimd_change``).
    """
    locked = Client.objects.select_for_update().get(pk=client.pk)
    old_keys = jwks_thumbprints(locked.jwks)
    before = client_snapshot(locked) | {"keys": {"jwks_uri": locked.jwks_uri or None, "thumbprints": old_keys}}
    wanted = set(scopes)
    kept = [s for s in locked.scopes if s in wanted]
    if expires_at_most is not None:
        locked.expires_at = expires_at_most if locked.expires_at is None else min(locked.expires_at, expires_at_most)
    locked.scopes = kept
    locked.metadata = {**metadata, "scope": " ".join(kept)}
    locked.name = name or locked.name
    locked.auth_method = auth_method
    locked.jwks = jwks
    locked.jwks_uri = jwks_uri or ""
    locked.software_version = software_version or ""
    locked.save(
        update_fields=[
            "scopes",
            "expires_at",
            "metadata",
            "name",
            "auth_method",
            "jwks",
            "jwks_uri",
            "software_version",
        ]
    )
    audit_record(
        actor=actor,
        action=action,
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked)
        | {
            "auth_method": locked.auth_method,
            "key_rotated": jwks_thumbprints(locked.jwks) != old_keys,
            "keys": keys_audit,
        },
        reason=reason,
        policy_version=locked.policy_version if policy_version is None else policy_version,
    )
    outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
    return locked


class NotAdoptable(ValueError):
    """The client is not (or no longer) a shadow client that may be adopted; nothing was written."""


def adoptable_problem(client: Client) -> str | None:
    """Why ``client`` cannot be adopted, or None: only an unmanaged client found at the IdP, still there."""
    if client.managed:
        return f"client {client.registration_id} is already managed by Registrar; only a shadow client can be adopted"
    if client.state in ENDED_STATES:
        return f"client {client.registration_id} has ended ({client.state}); there is nothing left to adopt"
    if not client.idp_client_id:
        return f"client {client.registration_id} has no client id at the IdP to adopt"
    return None


@transaction.atomic
def client_adopt(
    *,
    client: Client,
    actor: Actor,
    owner,
    purpose: str,
    scopes: list[str],
    expires_at: datetime,
    team: Team | None = None,
    risk_tier: str = RiskTier.MEDIUM,
    created_via: str = CreatedVia.PRE_REGISTRATION,
    policy_version: int | None = None,
    metadata: dict | None = None,
    audiences: list[str] | None = None,
    internal_only: bool = False,
    auth_method: str = "private_key_jwt",
    jwks: dict | None = None,
    jwks_uri: str = "",
    software_id: str = "",
    software_version: str = "",
    reason: str = "",
    ceiling_ttl_seconds: int | None = None,
    adopted_by_request: str = "",
) -> Client:
    """Bring a shadow client (found at the IdP, ``managed=False``) under Registrar, in place.

    The same Client row — its registration id and its client id at the IdP — gets an owner, a purpose, the
    approved scopes, audiences and lifetime (its ceiling for renewals), the policy version and ``created_via``;
    its state is kept. One ``client.adopt`` audit event; the IdP client is updated through the outbox (UPDATE:
    never a second client). Raises NotAdoptable (nothing written) if it is not a shadow client any more.
    """
    locked = Client.objects.select_for_update().get(pk=client.pk)
    problem = adoptable_problem(locked)
    if problem is not None:
        raise NotAdoptable(problem)
    now = timezone.now()
    before = client_snapshot(locked) | {"managed": False, "created_via": locked.created_via}
    scopes = sorted(set(scopes))
    audiences = list(audiences or [])
    if ceiling_ttl_seconds is None:
        ceiling_ttl_seconds = max(1, math.ceil((expires_at - now).total_seconds()))
    locked.managed = True
    locked.owner = owner
    locked.team = team
    locked.purpose = purpose
    locked.scopes = scopes
    locked.audiences = audiences
    locked.internal_only = internal_only
    locked.expires_at = expires_at
    locked.risk_tier = risk_tier
    locked.created_via = created_via
    locked.policy_version = policy_version
    locked.metadata = dict(metadata or {})
    locked.name = str(locked.metadata.get("client_name") or locked.name)[:200]
    locked.auth_method = auth_method
    locked.jwks = jwks
    locked.jwks_uri = jwks_uri or ""
    locked.software_id = software_id or ""
    locked.software_version = software_version or ""
    locked.ceiling_scopes = list(scopes)
    locked.ceiling_ttl_seconds = ceiling_ttl_seconds
    locked.ceiling_audiences = list(audiences)
    locked.save(
        update_fields=[
            "managed",
            "owner",
            "team",
            "purpose",
            "scopes",
            "audiences",
            "internal_only",
            "expires_at",
            "risk_tier",
            "created_via",
            "policy_version",
            "metadata",
            "name",
            "auth_method",
            "jwks",
            "jwks_uri",
            "software_id",
            "software_version",
            "ceiling_scopes",
            "ceiling_ttl_seconds",
            "ceiling_audiences",
        ]
    )
    audit_record(
        actor=actor,
        action="client.adopt",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after=client_snapshot(locked)
        | {
            "managed": True,
            "created_via": created_via,
            "purpose": purpose,
            "idp_client_id": locked.idp_client_id,
            "request": adopted_by_request or None,
        },
        reason=reason,
        policy_version=policy_version,
    )
    outbox_enqueue(client=locked, operation=OutboxOperation.UPDATE)
    return locked
