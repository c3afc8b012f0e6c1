"""Data builders for the security tests (inventory, dashboard, reports, API): bulk and fast."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from inventory.choices import ClientState, CreatedVia, RiskTier
from inventory.models import Client

STATES = [ClientState.ACTIVE, ClientState.ACTIVE, ClientState.SUSPENDED, ClientState.EXPIRED, ClientState.RETIRED]
TIERS = [RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH]


def bulk_clients(n: int, *, idp, owners, teams, start: int = 0, prefix: str = "bulk") -> list[Client]:
    """``n`` varied clients in one bulk INSERT (states, tiers, owners, teams, expiries, flags, created_via)."""
    now = timezone.now()
    rows = []
    for i in range(start, start + n):
        state = STATES[i % len(STATES)]
        rows.append(
            Client(
                registration_id=f"reg_{prefix}{i:07d}",
                idp=idp,
                idp_client_id=f"{prefix}-cid-{i}",
                name=f"{prefix}-agent-{i}",
                owner=owners[i % len(owners)],
                team=teams[i % len(teams)] if teams else None,
                purpose=f"Bulk purpose number {i}",
                scopes=["tickets:read"],
                risk_tier=TIERS[i % len(TIERS)],
                state=state,
                created_via=[CreatedVia.TOKEN, CreatedVia.SOFTWARE_STATEMENT, CreatedVia.ADMIN][i % 3],
                expires_at=None if i % 11 == 0 else now + timedelta(hours=(i % 48) - 12),
                ended_at=now - timedelta(hours=1) if state in (ClientState.EXPIRED, ClientState.RETIRED) else None,
                orphaned_at=now - timedelta(days=1) if i % 13 == 0 else None,
                stale_at=now if i % 17 == 0 else None,
                sync_failed=i % 19 == 0,
                managed=i % 23 != 0,
                depth=0,
            )
        )
    created = Client.objects.bulk_create(rows, batch_size=1000)  # rows × columns stay under 65,535 parameters
    return created
