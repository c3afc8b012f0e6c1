"""DCR debt (docs/mcp.md): live dynamically registered clients grouped by software identity, and the way out.

The MCP specification deprecates dynamic client registration for Client ID Metadata Documents; the earliest
it may be removed is ``DCR_REMOVAL_EARLIEST``. ``dcr_debt`` (a read: one grouped query) lists, per software
identity, its live clients, how many were never used, and a plan; ``dcr_duplicates_retire`` (a write) carries
out "keep one, retire the rest" through the normal lifecycle (``inventory.lifecycle.client_transition``: each
retirement is audited and reaches the IdP through the outbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from approvals.models import RegistrationRequest
from inventory.choices import LIVE_STATES, ClientState, CreatedVia
from inventory.lifecycle import client_transition
from inventory.models import Client
from portal.audit import Actor

DCR_REMOVAL_EARLIEST = date(2027, 7, 28)
DCR_VIAS = (CreatedVia.TOKEN, CreatedVia.SOFTWARE_STATEMENT, CreatedVia.SPAWN, CreatedVia.ANONYMOUS)
GROUPS_SHOWN = 200


@dataclass(frozen=True)
class DebtGroup:
    software_identity: str
    name: str
    software_id: str
    live: int
    never_used: int
    anonymous: int
    newest: datetime | None

    @property
    def duplicates(self) -> int:
        return max(0, self.live - 1)

    @property
    def plan(self) -> str:
        if self.live > 1:
            return f"keep one, retire {self.duplicates}; then move the software to a CIMD or pre-registered client"
        return "move the software to a Client ID Metadata Document or a pre-registered client"


@dataclass(frozen=True)
class Debt:
    groups: list[DebtGroup]
    live_dcr: int
    duplicates: int
    never_used: int
    days_left: int


def _live_dcr_requests():
    return RegistrationRequest.objects.filter(
        client__state__in=LIVE_STATES, client__created_via__in=DCR_VIAS, client__registration_id=F("public_id")
    ).exclude(software_identity="")


def dcr_debt(*, today: date | None = None) -> Debt:
    """Groups with their counts, largest first (one grouped query), and the days left before the earliest removal."""
    today = today or timezone.localdate()
    rows = (
        _live_dcr_requests()
        .values("software_identity")
        .annotate(
            live=Count("pk"),
            never_used=Count("pk", filter=Q(client__last_used_at__isnull=True)),
            anonymous=Count("pk", filter=Q(via=CreatedVia.ANONYMOUS)),
            newest=Max("client__created_at"),
            name=Max("client_name"),
            software=Max("software_id"),
        )
        .order_by("-live", "-never_used", "software_identity")
    )
    groups = [
        DebtGroup(
            software_identity=row["software_identity"],
            name=row["name"] or "(unnamed)",
            software_id=row["software"] or "",
            live=row["live"],
            never_used=row["never_used"],
            anonymous=row["anonymous"],
            newest=row["newest"],
        )
        for row in rows
    ]
    return Debt(
        groups=groups[:GROUPS_SHOWN],
        live_dcr=sum(g.live for g in groups),
        duplicates=sum(g.duplicates for g in groups),
        never_used=sum(g.never_used for g in groups),
        days_left=(DCR_REMOVAL_EARLIEST - today).days,
    )


class NothingToRetire(Exception):
    """The group has one live client (or none): nothing to do."""


def dcr_duplicates_retire(*, actor: Actor, software_identity: str) -> tuple[Client, list[Client]]:
    """Keep the group's most recently used (else newest) live client, retire the others through the lifecycle."""
    with transaction.atomic():
        ids = list(_live_dcr_requests().filter(software_identity=software_identity).values_list("client_id", flat=True))
        clients = list(
            Client.objects.filter(pk__in=ids, state__in=LIVE_STATES).order_by(
                F("last_used_at").desc(nulls_last=True), "-created_at", "-pk"
            )
        )
        if len(clients) < 2:
            raise NothingToRetire("this software has no duplicate live clients")
        kept, rest = clients[0], clients[1:]
        retired = [
            client_transition(
                client=client,
                target=ClientState.RETIRED,
                actor=actor,
                reason=f"DCR debt: duplicate of {kept.registration_id} (same software); kept the most recently used",
            )
            for client in rest
        ]
    return kept, retired
