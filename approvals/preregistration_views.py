"""``/inventory/new/``: pre-register a client by hand (docs/cimd.md). Thin: parse the form, call
``approvals.preregistration.preregister``, say what happened.

The page lives in approvals' URLconf (included before inventory's, so the path is inventory's in name only):
inventory may not import approvals.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from approvals.choices import RequestState
from approvals.forms import PreRegistrationForm
from approvals.preregistration import PreregistrationError, PreregistrationForbidden, preregister
from portal.roles import Role, can_preregister, has_role, role_required


def _owners(user):
    """The owners an admin may choose; None (no owner field) for everyone else."""
    if not has_role(user, Role.ADMIN):
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


@role_required(Role.OWNER, Role.ADMIN)
def preregister_page(request: HttpRequest) -> HttpResponse:
    if not can_preregister(request.user, None):
        raise PermissionDenied("Service accounts cannot pre-register clients.")
    owners = _owners(request.user)
    form = PreRegistrationForm(request.POST or None, owners=owners, initial={"source": "cimd"})
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                done = preregister(
                    submitter=request.user, source_ip=request.META.get("REMOTE_ADDR"), **form.service_kwargs()
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
                return redirect(reverse("approvals:preregister"))
    return render(
        request,
        "approvals/preregister.html",
        {"form": form, "nav_active": "inventory", "admin_view": owners is not None},
        status=status,
    )
