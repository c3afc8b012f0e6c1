"""Reads for owners: their clients (with what is pending on each) and the inventory's home-page tiles."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import BooleanField, Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory import hooks
from inventory.models import Client, Team, TransferOffer, TransferState
from inventory.selectors import counts
from portal.paging import bounded
from portal.roles import Role


def clients_of_owner(user) -> QuerySet[Client]:
    """The person's live clients, soonest expiry first, each annotated ``transfer_pending`` and
    ``renewal_pending`` (a renewal waiting for review; the approvals app says which)."""
    renewals = hooks.pending_renewals()
    renewal_pending = (
        Exists(renewals.filter(client=OuterRef("pk")))
        if renewals is not None
        else Value(False, output_field=BooleanField())
    )
    return (
        Client.objects.live()
        .owned_by(user)
        .select_related("idp", "hold_by")
        .annotate(
            transfer_pending=Exists(TransferOffer.objects.filter(client=OuterRef("pk"), state=TransferState.PENDING)),
            renewal_pending=renewal_pending,
        )
        .order_by(F("expires_at").asc(nulls_last=True), "pk")
    )


def teams_of(user) -> QuerySet[Team]:
    """Teams the person belongs to or manages, by name."""
    return Team.objects.filter(Q(members=user) | Q(manager=user)).distinct().order_by("name")


def default_team_of(user) -> Team | None:
    """The person's team for a new token: among the teams they belong to (else manage), the one holding most
    of their live clients, then by name. One query."""
    held = (
        Client.objects.live()
        .filter(owner=user, team=OuterRef("pk"))
        .order_by()
        .values("team")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        teams_of(user)
        .annotate(
            member=Exists(Team.members.through.objects.filter(team=OuterRef("pk"), user=user)),
            held=Coalesce(Subquery(held[:1]), 0),
        )
        .order_by("-member", "-held", "name")
        .first()
    )


def home_tiles(user, roles: frozenset[str]) -> dict[str, int]:
    """The inventory's numbers on the home page (``portal.home`` collects every app's tiles): the owner's live
    clients from the counts (one small read), their clients expiring soon counted up to the threshold
    (``portal.paging.bounded``: "10,000+" past it), security's figures from the counts."""
    tiles: dict[str, int] = {}
    if Role.OWNER in roles:
        tiles["my_live_clients"] = counts.owners_total([user.pk])
        soon = Client.objects.owned_by(user).live().filter(expires_at__lte=timezone.now() + timedelta(days=7))
        tiles["expiring_soon"] = bounded(soon)
    if roles & {Role.SECURITY, Role.ADMIN}:
        tiles.update(counts.live_totals())  # from the counts: one small read, not four counts of the clients
    return tiles
