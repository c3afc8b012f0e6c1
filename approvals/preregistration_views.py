"""``/inventory/new/``: pre-register a client by hand (docs/cimd.md). Thin: parse the form, call
``approvals.preregistration.preregister``, say what happened.

The page lives in approvals' URLconf (included before inventory's, so the path is inventory's in name only):
inventory may not import approvals.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from approvals.choices import RequestState
from approvals.forms import PreRegistrationForm
from approvals.preregistration import (
    PreregistrationError,
    PreregistrationForbidden,
    adoption_metadata,
    adoption_pending,
    preregister,
)
from inventory.models import Client
from portal.roles import Role, can_adopt, can_preregister, has_role, role_required


def _owners(user, *, adopting: bool = False):
    """The owners an admin (or, adopting a shadow client, security) may choose; None (no owner field) otherwise."""
    if not has_role(user, Role.ADMIN) and not adopting:
        return None
    return get_user_model().objects.filter(is_active=True, is_service_account=False).order_by("username")


def outcome_message(reg_request) -> str:
    """One sentence about what became of a pre-registration, for the page and its flash message."""
    ident = reg_request.public_id
    if reg_request.state == RequestState.REFUSED:
        reasons = "; ".join(r.get("message", "") for r in reg_request.reasons or [])
        return f"{ident} was refused by policy v{reg_request.policy_version}: {reasons}"
    if reg_request.state == RequestState.APPROVED:
        return f"{ident} was approved by policy v{reg_request.policy_version} (low risk); the client is being created."
    return (
        f"{ident} waits for review ({reg_request.risk_tier} risk, {reg_request.approvals_needed} approval(s) needed). "
        "You submitted it, so someone else decides it."
    )


def _adoption_initial(client: Client) -> dict:
    """The form prefilled with what the IdP reported about a shadow client."""
    return {
        "source": "metadata",
        "metadata": json.dumps(adoption_metadata(client), indent=2, sort_keys=True),
        "purpose": client.purpose,
        "scope": " ".join(client.scopes or []),
    }


def _dcr_initial(key: str) -> tuple[dict, int]:
    """The form prefilled to replace a DCR-debt group by one governed client (approvals.dcr_debt)."""
    from approvals.dcr_debt import UnknownGroup, dcr_group_prefill

    try:
        prefill = dcr_group_prefill(key)
    except UnknownGroup as exc:
        raise Http404(str(exc)) from None
    metadata = prefill["metadata"]
    initial = {
        "source": "metadata",
        "metadata": json.dumps(metadata, indent=2, sort_keys=True),
        "purpose": prefill["purpose"],
        "scope": metadata.get("scope", ""),
        "owner": prefill["owner_id"],
    }
    return initial, prefill["live"]


@role_required(Role.OWNER, Role.ADMIN, Role.SECURITY)
def preregister_page(request: HttpRequest) -> HttpResponse:
    adopting = None
    dcr_key = request.GET.get("dcr") or ""
    dcr_live = 0
    if dcr_key:  # "Move to pre-registration/CIMD" on the DCR-debt page: security or an admin
        if not can_adopt(request.user):
            raise PermissionDenied("Only security and admins may move DCR clients.")
        initial, dcr_live = _dcr_initial(dcr_key)
    elif request.GET.get("adopt"):  # "Adopt…" on a shadow client's page: security or an admin
        if not can_adopt(request.user):
            raise PermissionDenied("Only security and admins may adopt a shadow client.")
        adopting = get_object_or_404(Client, registration_id=request.GET["adopt"])
    elif not can_preregister(request.user, None):
        raise PermissionDenied("Only owners and admins may pre-register clients.")
    owners = _owners(request.user, adopting=adopting is not None or bool(dcr_key))
    if adopting is not None:
        initial = _adoption_initial(adopting)
    elif not dcr_key:
        initial = {"source": "cimd"}
    form = PreRegistrationForm(request.POST or None, owners=owners, initial=initial, adopting=adopting is not None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                done = preregister(
                    submitter=request.user,
                    source_ip=request.META.get("REMOTE_ADDR"),
                    adopt=adopting,
                    dcr_move=bool(dcr_key),
                    **form.service_kwargs(),
                )
            except PreregistrationForbidden as exc:
                raise PermissionDenied(exc.description) from None
            except PreregistrationError as exc:
                form.add_error("cimd_url" if exc.error.startswith("cimd_") else None, exc.description)
                if len(exc.reasons) > 1:
                    for reason in exc.reasons:
                        form.add_error(None, reason)
                status = exc.status
            else:
                reg_request = done.reg_request
                level = messages.ERROR if reg_request.state == RequestState.REFUSED else messages.SUCCESS
                messages.add_message(request, level, outcome_message(reg_request))
                if adopting is not None:
                    return redirect(reverse("inventory:explain", args=[adopting.registration_id]))
                if dcr_key:
                    return redirect(reverse("approvals:dcr-debt"))
                return redirect(reverse("approvals:preregister"))
    return render(
        request,
        "approvals/preregister.html",
        {
            "form": form,
            "nav_active": "inventory",
            "admin_view": owners is not None,
            "adopting": adopting,
            "dcr_key": dcr_key,
            "dcr_live": dcr_live,
            "adoption_problem": _adoption_problem(adopting),
        },
        status=status,
    )


def _adoption_problem(client: Client | None) -> str | None:
    """Why the shadow client being adopted cannot be, said before anyone fills in the form."""
    if client is None:
        return None
    if client.managed:
        return f"{client.name} is already managed by Registrar; only a shadow client can be adopted."
    waiting = adoption_pending(client)
    if waiting is not None:
        return f"The adoption {waiting.public_id} of this client already waits for review."
    return None
