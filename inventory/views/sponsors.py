"""Co-sponsors: the owner invites from the client's explain page; the invited person answers, and any sponsor
leaves, from ``/inventory/sponsorships/``. Views parse, call one service, redirect."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from inventory.lifecycle import LifecycleError, PermissionRefused
from inventory.lifecycle_policies.sponsors import sponsor_decide, sponsor_invite, sponsor_remove
from inventory.models import Client, ClientSponsor, SponsorState


@login_required
@require_POST
def invite(request, registration_id: str):
    client = get_object_or_404(Client, registration_id=registration_id)
    try:
        sponsorship = sponsor_invite(
            client=client, user=request.user, username=request.POST.get("username", "").strip()
        )
    except PermissionRefused as refused:
        raise PermissionDenied(str(refused))
    except LifecycleError as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"{sponsorship.user.username} is invited to co-sponsor {client.name}.")
    return redirect("inventory:explain", registration_id=client.registration_id)


@login_required
@require_http_methods(["GET"])
def sponsorships(request):
    mine = (
        ClientSponsor.objects.filter(user=request.user, state__in=[SponsorState.PENDING, SponsorState.ACTIVE])
        .select_related("client", "client__owner", "invited_by")
        .order_by("state", "-created_at")
    )
    return render(request, "inventory/owner/sponsorships.html", {"sponsorships": mine, "nav_active": "my_clients"})


@login_required
@require_POST
def decide(request, pk: int, decision: str):
    sponsorship = get_object_or_404(ClientSponsor, pk=pk)
    try:
        if decision in ("accept", "decline"):
            sponsor_decide(sponsorship=sponsorship, user=request.user, accept=decision == "accept")
        elif decision == "remove":
            sponsor_remove(sponsorship=sponsorship, user=request.user)
        else:
            raise LifecycleError("choose accept, decline or remove")
    except PermissionRefused as refused:
        raise PermissionDenied(str(refused))
    except LifecycleError as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"Done: {decision}.")
    if request.POST.get("next") == "explain":
        return redirect("inventory:explain", registration_id=sponsorship.client.registration_id)
    return redirect("inventory:sponsorships")
