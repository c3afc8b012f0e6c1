"""Review queue, request detail + decide, and the owner's view. Thin: parse, call a service/selector, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from approvals import selectors
from approvals.choices import DecisionKind
from approvals.filtersets import RequestFilterSet
from approvals.forms import DecisionForm, WithdrawForm
from approvals.models import RegistrationRequest
from approvals.services import DecisionError, decision_blocker, request_approve, request_deny, request_withdraw
from portal.paging import BoundedPaginator
from portal.roles import Role, RoleRequiredMixin

QUEUE_PAGE_SIZE = 25


def _filters_query(request) -> str:
    """The current queue filters (and page) as a query string, without anything else."""
    query = request.GET.copy()
    for key in list(query):
        if key not in RequestFilterSet.base_filters and key != "page":
            del query[key]
    return query.urlencode()


def _queue_context(request) -> dict:
    filterset = RequestFilterSet(request.GET or None, queryset=selectors.queue_for(request.user))
    paginator = BoundedPaginator(filterset.qs, QUEUE_PAGE_SIZE)
    page_obj = paginator.get_page(request.GET.get("page"))
    rows = selectors.decorate_rows(list(page_obj.object_list), sensitivity=selectors.scope_sensitivity())
    return {
        "filter": filterset,
        "page_obj": page_obj,
        "rows": rows,
        "filtered": any(request.GET.get(name) for name in RequestFilterSet.base_filters),
        "query": _filters_query(request),
        "nav_active": "approvals",
    }


class QueueView(RoleRequiredMixin, View):
    required_roles = [Role.APPROVER]

    def get(self, request):
        context = _queue_context(request)
        if request.htmx and not request.htmx.boosted:
            return render(request, "approvals/_queue_rows.html", context)
        return render(request, "approvals/queue.html", context)


class DetailView(RoleRequiredMixin, View):
    required_roles = [Role.APPROVER]

    def get(self, request, public_id):
        return self.render_detail(request, public_id)

    @staticmethod
    def render_detail(request, public_id, *, form=None, status=200, decision=None):
        try:
            detail = selectors.request_detail(public_id)
        except RegistrationRequest.DoesNotExist:
            raise Http404("No such request")
        reg_request = detail.reg_request
        current = reg_request.granted_scopes or reg_request.requested_scopes
        decision = decision or request.GET.get("decide") or ""
        approve_form = (
            form
            if form is not None and decision == DecisionKind.APPROVE
            else DecisionForm(
                initial={"decision": DecisionKind.APPROVE, "scopes": current, "narrow": True}, choices=current
            )
        )
        deny_form = (
            form
            if form is not None and decision == DecisionKind.DENY
            else DecisionForm(initial={"decision": DecisionKind.DENY})
        )
        context = {
            "detail": detail,
            "req": reg_request,
            "approve_form": approve_form,
            "deny_form": deny_form,
            "decide": decision,
            "blocker": decision_blocker(reg_request, request.user),
            "cimd": selectors.cimd_for_request(reg_request),
            "next": request.GET.get("next", ""),
            "nav_active": "approvals",
        }
        return render(request, "approvals/detail.html", context, status=status)


class DecideView(RoleRequiredMixin, View):
    """POST approve/deny. htmx: answers with the updated queue (or the inline form with its error);
    without JS: redirect + message, or the detail page with the error and the service's status."""

    required_roles = [Role.APPROVER]

    def get(self, request, public_id):
        decision = request.GET.get("decision", DecisionKind.APPROVE)
        if request.htmx:
            reg_request = self._get(public_id)
            return render(request, "approvals/_decide_form.html", self._inline_context(request, reg_request, decision))
        return HttpResponseRedirect(reverse("approvals:detail", args=[public_id]) + f"?decide={decision}#decide")

    def post(self, request, public_id):
        reg_request = self._get(public_id)
        current = reg_request.granted_scopes or reg_request.requested_scopes
        form = DecisionForm(request.POST, choices=current)
        decision = request.POST.get("decision", "")
        if not form.is_valid():
            return self._error(request, reg_request, form, "Check the form.", 400, decision)
        try:
            if form.cleaned_data["decision"] == DecisionKind.APPROVE:
                decided = request_approve(reg_request=reg_request, approver=request.user, **form.service_kwargs())
            else:
                decided = request_deny(
                    reg_request=reg_request, approver=request.user, reason=form.service_kwargs()["reason"]
                )
        except DecisionError as exc:
            form.add_error(None, str(exc))
            return self._error(request, reg_request, form, str(exc), exc.status_code, decision)
        message = self._success_message(decided, decision)
        if request.htmx:
            context = _queue_context(request) | {"flash": message}
            return render(request, "approvals/_queue_rows.html", context)
        messages.success(request, message)
        return HttpResponseRedirect(self._next(request))

    @staticmethod
    def _get(public_id) -> RegistrationRequest:
        try:
            return RegistrationRequest.objects.get(public_id=public_id)
        except RegistrationRequest.DoesNotExist:
            raise Http404("No such request")

    @staticmethod
    def _inline_context(request, reg_request, decision, form=None):
        return {
            "req": reg_request,
            "decision": decision,
            "form": form or DecisionForm(initial={"decision": decision}),
            "reason_required": decision == DecisionKind.DENY or reg_request.risk_tier == "high",
            "query": _filters_query(request),
        }

    def _error(self, request, reg_request, form, message, status, decision):
        if request.htmx:
            response = render(
                request,
                "approvals/_decide_form.html",
                self._inline_context(request, reg_request, decision, form),
                status=status,
            )
            # static/js/approvals.js swaps 4xx answers carrying this header into the form's slot.
            response["X-Decision-Error"] = "1"
            return response
        messages.error(request, message)
        return DetailView.render_detail(request, reg_request.public_id, form=form, status=status, decision=decision)

    @staticmethod
    def _success_message(decided: RegistrationRequest, decision) -> str:
        """What the decider reads, from the request as the service left it."""
        name = decided.client_name or decided.public_id
        if decision == DecisionKind.DENY:
            return f"Denied {name}."
        if decided.state == "approved":
            return f"Approved {name}: the client is being provisioned."
        return f"Approval recorded for {name}; it needs another approver."

    @staticmethod
    def _next(request) -> str:
        target = request.POST.get("next") or request.GET.get("next") or ""
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return target
        return reverse("approvals:queue")


class MyRequestsView(LoginRequiredMixin, View):
    """Requests the signed-in user sponsors or made with their tokens, with decisions; withdraw pending."""

    def get(self, request):
        filterset = RequestFilterSet(request.GET or None, queryset=selectors.requests_of_owner(request.user))
        paginator = BoundedPaginator(filterset.qs, QUEUE_PAGE_SIZE)
        page_obj = paginator.get_page(request.GET.get("page"))
        rows = selectors.decorate_rows(list(page_obj.object_list), sensitivity=selectors.scope_sensitivity())
        return render(
            request,
            "approvals/mine.html",
            {
                "filter": filterset,
                "page_obj": page_obj,
                "rows": rows,
                "nav_active": "my_requests",
            },
        )


class WithdrawView(LoginRequiredMixin, View):
    def post(self, request, public_id):
        reg_request = DecideView._get(public_id)
        form = WithdrawForm(request.POST)
        form.is_valid()
        try:
            request_withdraw(reg_request=reg_request, actor=request.user, reason=form.cleaned_data.get("reason", ""))
        except DecisionError as exc:
            if exc.status_code == 403:
                raise PermissionDenied(str(exc))
            messages.error(request, str(exc))
            response = MyRequestsView().get(request)
            response.status_code = exc.status_code
            return response
        messages.success(request, f"Withdrew {reg_request.client_name or reg_request.public_id}.")
        return HttpResponseRedirect(reverse("approvals:mine"))


class DcrDebtView(RoleRequiredMixin, View):
    """DCR debt (docs/mcp.md): groups by software identity and their plan; "keep one, retire the rest" as a POST."""

    required_roles = (Role.SECURITY, Role.ADMIN)

    def get(self, request):
        from approvals.dcr_debt import dcr_debt

        return render(
            request, "approvals/dcr_debt.html", {"debt": dcr_debt(), "can_retire": True, "nav_active": "dashboard"}
        )


class DcrDebtRetireView(RoleRequiredMixin, View):
    required_roles = (Role.SECURITY, Role.ADMIN)

    def post(self, request, software_identity: str):
        from approvals.dcr_debt import NothingToRetire, dcr_duplicates_retire
        from portal.audit import Actor

        try:
            kept, retired = dcr_duplicates_retire(actor=Actor.user(request.user), software_identity=software_identity)
        except NothingToRetire as exc:
            messages.warning(request, str(exc))
        else:
            messages.success(
                request, f"Kept {kept.name} ({kept.registration_id}); retired {len(retired)} duplicate(s)."
            )
        return HttpResponseRedirect(reverse("approvals:dcr-debt"))
