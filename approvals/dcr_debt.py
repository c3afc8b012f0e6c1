"""DCR debt (docs/mcp.md): live dynamically registered clients grouped by software identity, and the way out.

The MCP specification deprecates dynamic client registration for Client ID Metadata Documents; the earliest
it may be removed is ``DCR_REMOVAL_EARLIEST``. ``dcr_debt`` (a read: one grouped query) lists, per software
identity, its live clients, how many were never used, and a plan; ``dcr_duplicates_retire`` (a write) carries
out "keep one, retire the rest" through the normal lifecycle (``inventory.lifecycle.client_transition``: each
retirement is audited and reaches the IdP through the outbox).

Near-duplicates: registrations without a ``software_id`` whose identities differ only in volatile parts — the
port of a loopback redirect URI (RFC 8252 native apps pick one per run) — same client name, same redirect hosts
and paths, same auth method. ``near_groups`` (one more query) groups them under a key of their own, distinct
from the exact groups; ``dcr_duplicates_retire`` and ``dcr_group_prefill`` (the "Move to pre-registration/CIMD"
form, ``approvals.preregistration_views``) take either kind of key.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
class NearGroup:
    """Registrations of one software under several exact identities (differing in volatile parts only)."""

    key: str
    name: str
    identities: int
    live: int

    @property
    def duplicates(self) -> int:
        return max(0, self.live - 1)


@dataclass(frozen=True)
class Debt:
    groups: list[DebtGroup]
    near: list[NearGroup]
    live_dcr: int
    duplicates: int
    never_used: int
    days_left: int


def _live_dcr_requests():
    return RegistrationRequest.objects.filter(
        client__state__in=LIVE_STATES, client__created_via__in=DCR_VIAS, client__registration_id=F("public_id")
    ).exclude(software_identity="")


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _stable_uri(uri: Any) -> str:
    """A redirect URI without its volatile part: the port of a loopback host."""
    if not isinstance(uri, str):
        return ""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        return uri
    if host in _LOOPBACK:
        netloc = f"[{host}]" if ":" in host else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def near_key(metadata: Any, client_name: str) -> str:
    """The near-duplicate key of a registration: its identity with the loopback ports left out."""
    md = metadata if isinstance(metadata, dict) else {}
    uris = md.get("redirect_uris")
    stable = sorted({_stable_uri(u) for u in uris}) if isinstance(uris, list) else []
    method = md.get("token_endpoint_auth_method")
    parts = ["near", client_name or "", stable, method if isinstance(method, str) else ""]
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def _near_members() -> dict[str, list[dict[str, Any]]]:
    """Live DCR requests without a software_id, by near key, where a key spans more than one exact identity."""
    rows = (
        _live_dcr_requests()
        .filter(software_id="")
        .values(
            "pk",
            "client_id",
            "software_identity",
            "client_name",
            "metadata",
            "owner_id",
            "purpose",
            "client__created_at",
        )
    )
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(near_key(row["metadata"], row["client_name"]), []).append(row)
    return {k: v for k, v in by_key.items() if len({r["software_identity"] for r in v}) > 1}


def near_groups() -> list[NearGroup]:
    groups = [
        NearGroup(
            key=key,
            name=members[0]["client_name"] or "(unnamed)",
            identities=len({r["software_identity"] for r in members}),
            live=len(members),
        )
        for key, members in _near_members().items()
    ]
    return sorted(groups, key=lambda g: (-g.live, g.key))[:GROUPS_SHOWN]


def _group_requests(key: str) -> list[dict[str, Any]]:
    """The live DCR requests of an exact group (software identity) or, failing that, of a near group."""
    fields = ("pk", "client_id", "client_name", "metadata", "owner_id", "purpose", "client__created_at")
    exact = list(_live_dcr_requests().filter(software_identity=key).values(*fields))
    return exact or _near_members().get(key, [])


class UnknownGroup(Exception):
    """No live DCR clients under that key."""


def dcr_group_prefill(key: str) -> dict[str, Any]:
    """What the pre-registration form is prefilled with to replace a group by one governed client: the newest
    registration's metadata (loopback redirect URIs without their port), its purpose, and the group's owner
    (the one owning most of its clients)."""
    members = _group_requests(key)
    if not members:
        raise UnknownGroup("no live dynamically registered clients in this group")
    newest = max(members, key=lambda r: (r["client__created_at"] is not None, r["client__created_at"], r["pk"]))
    metadata = dict(newest["metadata"]) if isinstance(newest["metadata"], dict) else {}
    for name in ("software_statement", "requested_ttl", "audiences"):
        metadata.pop(name, None)
    if isinstance(metadata.get("redirect_uris"), list):
        metadata["redirect_uris"] = sorted({_stable_uri(u) for u in metadata["redirect_uris"]})
    if not metadata.get("client_name") and newest["client_name"]:
        metadata["client_name"] = newest["client_name"]
    owner_id = Counter(r["owner_id"] for r in members).most_common(1)[0][0]
    return {"metadata": metadata, "owner_id": owner_id, "purpose": newest["purpose"], "live": len(members)}


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
        near=near_groups(),
        live_dcr=sum(g.live for g in groups),
        duplicates=sum(g.duplicates for g in groups),
        never_used=sum(g.never_used for g in groups),
        days_left=(DCR_REMOVAL_EARLIEST - today).days,
    )


class NothingToRetire(Exception):
    """The group has one live client (or none): nothing to do."""


def dcr_duplicates_retire(*, actor: Actor, software_identity: str) -> tuple[Client, list[Client]]:
    """Keep the group's most recently used (else newest) live client, retire the others through the lifecycle.
    ``software_identity`` is an exact group's identity or a near group's key."""
    with transaction.atomic():
        ids = [r["client_id"] for r in _group_requests(software_identity)]
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
