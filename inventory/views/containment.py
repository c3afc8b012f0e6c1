"""Containment on one client, for security and admins: hold it, lift a hold, revoke or restore its spawn right.

Reached from the client's explain page. GET shows a confirmation page (what will happen, who is affected) with
a required reason; POST calls one service in ``inventory.containment`` and returns to the explain page. The
role check is ``portal.roles.can_hold_clients`` here and again inside the service.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from inventory import containment
from inventory import lifecycle as lc
from inventory.choices import LIVE_STATES
from inventory.models import Client
from inventory.views.security import visible_client_or_404
from portal import roles

ACTIONS = {
    "hold": {
        "title": _("Hold"),
        "button": _("Hold the client"),
        "explain": _(
            "The client and its live descendants are suspended and disabled at the identity provider. "
            "Their owner sees your reason and cannot resume them; only security or an admin can lift "
            "the hold."
        ),
    },
    "lift-hold": {
        "title": _("Lift the hold on"),
        "button": _("Lift the hold"),
        "explain": _(
            "The hold is lifted on the client and on its descendants held by the same decision. Clients "
            "the hold suspended are resumed and re-enabled at the identity provider; one its owner had "
            "suspended before, or past its expiry, or orphaned, stays suspended."
        ),
    },
    "revoke-spawn": {
        "title": _("Revoke the spawn right of"),
        "button": _("Revoke the spawn right"),
        "explain": _(
            "The client's registration access token can spawn no more children. Existing children are "
            "not changed (use a hold or break glass for them)."
        ),
    },
    "restore-spawn": {
        "title": _("Restore the spawn right of"),
        "button": _("Restore the spawn right"),
        "explain": _("The client may spawn children again, within the policy's per-parent limit."),
    },
}


class ContainmentForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason (shown to the owner and kept in the audit log)"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(_("Say why."))
        return reason


def _available(action: str, client: Client) -> str | None:
    """Why ``action`` cannot apply to ``client`` now, or None."""
    if action == "hold":
        if client.hold_kind:
            return "This client is already held."
        if client.state not in LIVE_STATES:
            return f"A {client.state} client cannot be held."
    elif action == "lift-hold" and not client.hold_kind:
        return "This client is not held."
    elif action == "revoke-spawn" and client.spawn_revoked_at is not None:
        return "This client already has no right to spawn children."
    elif action == "restore-spawn" and client.spawn_revoked_at is None:
        return "This client may already spawn children."
    return None


def _run(action: str, client: Client, user, reason: str) -> str:
    if action == "hold":
        containment.client_hold_place(client=client, user=user, reason=reason)
        return f"{client.name} is held; its owner cannot resume it."
    if action == "lift-hold":
        done = containment.client_hold_lift(client=client, user=user, reason=reason)
        message = f"Hold lifted on {len(done.lifted)} client(s); {len(done.resumed)} resumed."
        if done.still_suspended:
            message += " Still suspended: " + "; ".join(f"{reg} ({why})" for reg, why in done.still_suspended.items())
        return message
    if action == "revoke-spawn":
        containment.client_spawn_revoke_by(client=client, user=user, reason=reason)
        return f"{client.name} can spawn no more children."
    containment.client_spawn_restore(client=client, user=user, reason=reason)
    return f"{client.name} may spawn children again."


@login_required
@require_http_methods(["GET", "POST"])
def containment_action(request, registration_id: str, action: str):
    if action not in ACTIONS:
        raise Http404("unknown action")
    client = visible_client_or_404(request, registration_id)
    if not roles.can_hold_clients(request.user):
        raise PermissionDenied("Only security or an admin can place or lift holds and change spawn rights.")
    form = ContainmentForm(request.POST or None)
    unavailable = _available(action, client)
    if request.method == "POST" and unavailable is None and form.is_valid():
        try:
            message = _run(action, client, request.user, form.cleaned_data["reason"])
        except lc.PermissionRefused as exc:
            raise PermissionDenied(str(exc))
        except lc.LifecycleError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, message)
            return redirect("inventory:explain", registration_id=client.registration_id)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "inventory/security/containment_confirm.html",
        {
            "client": client,
            "action": action,
            "spec": ACTIONS[action],
            "form": form,
            "unavailable": unavailable,
            "hold": lc.hold_description(client) if client.hold_kind else "",
            "descendants": Client.objects.filter(pk__in=lc.live_lineage_ids([client.pk]), state__in=LIVE_STATES)
            .exclude(pk=client.pk)
            .count(),
            "nav_active": "inventory",
        },
        status=status,
    )
