"""Owners' pages: my clients (renew, retire, suspend/resume, rotate key, transfer, bulk), the transfer
inbox, orphans to take over, and break glass (admins and security). Views parse, call one service, redirect."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from inventory import breakglass
from inventory import lifecycle as lc
from inventory.choices import LIVE_STATES
from inventory.forms import BreakGlassForm, RotateKeyForm, TransferForm
from inventory.models import Client, TransferOffer, TransferState
from inventory.permissions import can_manage_client
from inventory.selectors.owners import clients_of_owner
from portal import roles
from portal.paging import BoundedPaginator

PAGE_SIZE = 50


@login_required
@require_http_methods(["GET"])
def mine(request):
    page = BoundedPaginator(clients_of_owner(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    incoming = TransferOffer.objects.filter(to_user=request.user, state=TransferState.PENDING).count()
    return render(
        request,
        "inventory/owner/mine.html",
        {
            "page_obj": page,
            "clients": page.object_list,
            "now": timezone.now(),
            "incoming_offers": incoming,
            "nav_active": "my_clients",
        },
    )


def _managed_client(request, registration_id: str) -> Client:
    client = get_object_or_404(Client, registration_id=registration_id)
    if not can_manage_client(request.user, client):
        raise PermissionDenied("You can only act on your own clients.")
    return client


def _do(http_request, label: str, call):
    """Run one service call: what it returns (the changed row or outcome), or None when the lifecycle refused
    (shown as a message; a permission refusal is a 403)."""
    try:
        return call()
    except lc.PermissionRefused as exc:
        raise PermissionDenied(str(exc))
    except lc.LifecycleError as exc:
        messages.error(http_request, f"{label}: {exc}")
        return None


@login_required
@require_POST
def client_action(request, registration_id: str, action: str):
    client = _managed_client(request, registration_id)
    reason = request.POST.get("reason", "")[:500]
    user = request.user
    if action == "renew":
        outcome = _do(request, f"Renew {client.name}", lambda: lc.client_renew(client=client, user=user, reason=reason))
        if outcome is not None and outcome.needs_review:
            why = "; ".join(r["message"] for r in outcome.reg_request.reasons)
            messages.info(request, f"{client.name}: renewal sent for review ({why}).")
        elif outcome is not None:
            renewed = outcome.client
            messages.success(request, f"{renewed.name} renewed until {renewed.expires_at:%Y-%m-%d %H:%M} UTC.")
    elif action in ("retire", "suspend", "resume"):
        services: dict[str, Callable[..., object]] = {
            "retire": lc.client_retire,
            "suspend": lc.client_suspend,
            "resume": lc.client_resume,
        }
        service = services[action]
        if (
            _do(request, f"{action.title()} {client.name}", lambda: service(client=client, user=user, reason=reason))
            is not None
        ):
            past = {"retire": "retired", "suspend": "suspended", "resume": "resumed"}[action]
            messages.success(request, f"{client.name} {past}; the IdP is being updated.")
    else:
        raise Http404("unknown action")
    return redirect("inventory:mine")


@login_required
@require_POST
def bulk_action(request):
    action = request.POST.get("action")
    if action not in ("renew", "retire"):
        messages.error(request, "Choose renew or retire.")
        return redirect("inventory:mine")
    ids = request.POST.getlist("ids")
    clients = list(Client.objects.filter(registration_id__in=ids, state__in=LIVE_STATES))
    if not clients:
        messages.error(request, "Select at least one client.")
        return redirect("inventory:mine")
    if not all(can_manage_client(request.user, c) for c in clients):
        raise PermissionDenied("You can only act on your own clients.")
    done, review, failed = 0, 0, []
    for client in clients:
        try:
            with transaction.atomic():  # each client on its own: one failure does not undo the others
                if action == "renew":
                    outcome = lc.client_renew(client=client, user=request.user, reason="bulk renew")
                    review += outcome.needs_review
                    done += outcome.renewed
                else:
                    lc.client_retire(client=client, user=request.user, reason="bulk retire")
                    done += 1
        except lc.LifecycleError as exc:
            failed.append(f"{client.name}: {exc}")
    verb = "renewed" if action == "renew" else "retired"
    if done:
        messages.success(request, f"{done} client(s) {verb}.")
    if review:
        messages.info(request, f"{review} renewal(s) sent for review.")
    for line in failed:
        messages.error(request, line)
    return redirect("inventory:mine")


@login_required
@require_http_methods(["GET", "POST"])
def rotate_key(request, registration_id: str):
    client = _managed_client(request, registration_id)
    form = RotateKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            lc.client_rotate_key(
                client=client, user=request.user, jwks=form.cleaned_data["jwks"], reason=form.cleaned_data["reason"]
            )
        except lc.LifecycleError as exc:
            form.add_error("jwks", str(exc))
        else:
            messages.success(request, f"New key for {client.name} saved; the IdP is being updated.")
            return redirect("inventory:mine")
    return render(
        request, "inventory/owner/rotate_key.html", {"client": client, "form": form, "nav_active": "my_clients"}
    )


@login_required
@require_http_methods(["GET", "POST"])
def transfer(request, registration_id: str):
    client = _managed_client(request, registration_id)
    form = TransferForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            lc.client_transfer_offer(
                client=client,
                to_user=form.cleaned_data["username"],
                user=request.user,
                reason=form.cleaned_data["reason"],
            )
        except lc.LifecycleError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"{client.name} offered to {form.cleaned_data['username'].username}; ownership moves when they accept.",
            )
            return redirect("inventory:mine")
    return render(
        request, "inventory/owner/transfer.html", {"client": client, "form": form, "nav_active": "my_clients"}
    )


@login_required
@require_http_methods(["GET"])
def transfers(request):
    base = TransferOffer.objects.filter(state=TransferState.PENDING).select_related("client", "from_user", "to_user")
    return render(
        request,
        "inventory/owner/transfers.html",
        {
            "incoming": base.filter(to_user=request.user).order_by("-created_at")[:200],
            "outgoing": base.filter(Q(from_user=request.user) | Q(offered_by=request.user)).order_by("-created_at")[
                :200
            ],
            "nav_active": "my_clients",
        },
    )


@login_required
@require_POST
def transfer_decide(request, pk: int, decision: str):
    offer = get_object_or_404(TransferOffer.objects.select_related("client"), pk=pk)
    if decision not in ("accept", "decline"):
        raise Http404("unknown decision")
    service = lc.client_transfer_accept if decision == "accept" else lc.client_transfer_decline
    if _do(request, "Transfer", lambda: service(offer=offer, user=request.user)) is not None:
        if decision == "accept":
            messages.success(request, f"You now own {offer.client.name}.")
        else:
            messages.success(request, f"Offer for {offer.client.name} closed.")
    return redirect("inventory:transfers")


@login_required
@require_http_methods(["GET"])
def orphans(request):
    user = request.user
    qs = Client.objects.live().orphaned().select_related("owner", "team", "idp").order_by("orphaned_at", "pk")
    if not roles.has_role(user, roles.Role.ADMIN):
        qs = qs.filter(Q(team__members=user) | Q(team__manager=user) | Q(owner__manager=user)).distinct()
    page = BoundedPaginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "inventory/owner/orphans.html",
        {"page_obj": page, "clients": page.object_list, "nav_active": "my_clients"},
    )


@login_required
@require_POST
def take_over(request, registration_id: str):
    client = get_object_or_404(Client, registration_id=registration_id)
    reason = request.POST.get("reason", "")[:500]
    if (
        _do(request, "Take over", lambda: lc.client_take_over(client=client, user=request.user, reason=reason))
        is not None
    ):
        messages.success(request, f"You now own {client.name}.")
        return redirect("inventory:mine")
    return redirect("inventory:orphans")


@login_required
@require_http_methods(["GET", "POST"])
def break_glass(request):
    if not roles.can_break_glass(request.user):
        raise PermissionDenied("Break glass is for admins and security.")
    form = BreakGlassForm(request.POST or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if request.POST.get("confirm") == "yes":
                outcome = breakglass.breakglass_execute(
                    user=request.user,
                    scope=data["scope"],
                    value=data["value"],
                    action=data["action"],
                    reason=data["reason"],
                )
                done = "suspended and held" if data["action"] == "suspend" else "retired"
                extra = f"; {len(outcome.held)} already-suspended client(s) held" if outcome.held else ""
                effects = (" Also: " + "; ".join(outcome.effects) + ".") if outcome.effects else ""
                messages.success(
                    request,
                    f"Break glass {outcome.decision_id}: {outcome.count} client(s) of "
                    f"{outcome.label} {done}{extra}.{effects}",
                )
                return redirect("inventory:break-glass")
            preview = breakglass.breakglass_preview(
                user=request.user, scope=data["scope"], value=data["value"], action=data["action"]
            )
        except lc.PermissionRefused as exc:
            raise PermissionDenied(str(exc))
        except lc.LifecycleError as exc:
            form.add_error(None, str(exc))
    return render(request, "inventory/owner/break_glass.html", {"form": form, "preview": preview})
