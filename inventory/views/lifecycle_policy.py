"""``/inventory/lifecycle-policy/``: admins edit the lifecycle policy. Saving a version first shows its what-if
preview on live data (per rule: flagged now, acted on after the grace, by owner and team; CSV); the admin then
publishes it enforced, or as monitor only. Older versions can be restored the same way (preview, then publish).
Security reads the page and the preview; only admins publish."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from inventory.lifecycle_policies import (
    LifecyclePolicyError,
    active_lifecycle_rules,
    lifecycle_policy_publish,
    parse_rules,
    preview,
)
from inventory.models import LifecyclePolicy
from portal import jsonbody
from portal.audit import Actor
from portal.roles import Role, has_role, role_required

TEMPLATE = "inventory/security/lifecycle_policy.html"


def _page(request, *, rules_text: str, what_if=None, errors: str = "", monitor_only: bool = False):
    return render(
        request,
        TEMPLATE,
        {
            "active": active_lifecycle_rules(),
            "versions": LifecyclePolicy.objects.select_related("created_by")[:50],
            "rules_text": rules_text,
            "preview": what_if,
            "errors": errors,
            "monitor_only": monitor_only,
            "can_publish": has_role(request.user, Role.ADMIN),
            "nav_active": "inventory",
        },
    )


@role_required(Role.ADMIN, Role.SECURITY)
@require_http_methods(["GET", "POST"])
def lifecycle_policy(request):
    if request.method == "GET":
        current = active_lifecycle_rules()
        return _page(request, rules_text=json.dumps(current.to_dict(), indent=2), monitor_only=current.monitor_only)
    action = request.POST.get("action", "preview")
    if action == "restore":
        old = get_object_or_404(LifecyclePolicy, version=request.POST.get("version"))
        text, monitor_only = json.dumps(old.rules, indent=2), old.monitor_only
    else:
        text, monitor_only = request.POST.get("rules", ""), request.POST.get("monitor_only") == "1"
    try:
        raw = jsonbody.loads(text)  # I-JSON: too deep a nesting is a ValueError here, not a 500
        rules = parse_rules(raw, monitor_only=monitor_only)
    except (ValueError, LifecyclePolicyError) as refused:
        return _page(request, rules_text=text, errors=str(refused), monitor_only=monitor_only)
    if action in ("publish", "publish_monitor"):
        if not has_role(request.user, Role.ADMIN):
            raise PermissionDenied("Only an admin publishes a lifecycle policy.")
        published = lifecycle_policy_publish(
            actor=Actor.user(request.user),
            rules=raw,
            monitor_only=action == "publish_monitor",
            note=request.POST.get("note", ""),
            created_by=request.user,
        )
        mode = "monitor only: issues are shown, no action is taken" if published.monitor_only else "enforced"
        messages.success(request, f"Lifecycle policy v{published.version} published, {mode}.")
        return redirect("inventory:lifecycle-policy")
    what_if = preview(rules)
    if action == "csv":
        response = HttpResponse(what_if.csv(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="lifecycle-policy-preview.csv"'
        return response
    return _page(request, rules_text=text, what_if=what_if, monitor_only=monitor_only)
