"""Attestation: the owner confirms a client is still needed and its scopes are still right."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES
from inventory.lifecycle import LifecycleError, PermissionRefused
from inventory.lifecycle_policies.rules import ATTESTATION
from inventory.models import Client, ComplianceIssue
from inventory.permissions import can_manage_client
from portal.audit import Actor, audit_record

STATEMENT = "still needed, and its scopes are still right"


@transaction.atomic
def client_attest(*, client: Client, user, note: str = "") -> Client:
    """The owner (or an admin) attests ``client``: ``attested_at`` moves to now, an open attestation issue is
    resolved, one ``client.attest`` audit event. A hold the policy placed stays until security lifts it."""
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if not can_manage_client(user, locked):
        raise PermissionRefused(f"{user} may not attest {locked.registration_id}")
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"a {locked.state} client needs no attestation")
    before = {"attested_at": locked.attested_at.isoformat() if locked.attested_at else None}
    now = timezone.now()
    locked.attested_at, locked.attested_by = now, user
    locked.save(update_fields=["attested_at", "attested_by"])
    resolved = ComplianceIssue.objects.filter(client=locked, rule=ATTESTATION, resolved_at__isnull=True).update(
        resolved_at=now, resolution="attested"
    )
    audit_record(
        actor=Actor.user(user),
        action="client.attest",
        object_type="client",
        object_id=locked.registration_id,
        before=before,
        after={"attested_at": now.isoformat(), "statement": STATEMENT, "resolved_issue": bool(resolved)},
        reason=(note or "")[:2000],
        policy_version=locked.policy_version,
    )
    return locked


@dataclass
class BulkAttest:
    attested: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def clients_attest(*, registration_ids: list[str], user, note: str = "") -> BulkAttest:
    """Attest many at once, each in its own transaction (one refusal does not undo the others)."""
    result = BulkAttest()
    clients = {c.registration_id: c for c in Client.objects.filter(registration_id__in=registration_ids[:1000])}
    for registration_id in registration_ids[:1000]:
        client = clients.get(registration_id)
        if client is None:
            result.refused[registration_id] = "no such client"
            continue
        try:
            client_attest(client=client, user=user, note=note)
        except LifecycleError as refused:
            result.refused[registration_id] = str(refused)
        else:
            result.attested.append(registration_id)
    return result
