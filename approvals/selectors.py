"""Reads for the review queue, the request detail page and the owner's view.

Every function here runs a fixed number of queries whatever the queue length (asserted in
tests/approvals/test_queue_views.py at 10 and 500 pending requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals.choices import DecisionKind, RequestKind
from approvals.conditions import AppliedWindow, applicable_window
from approvals.models import Decision, RegistrationRequest
from approvals.querysets import tier_rank
from inventory.choices import RiskTier
from inventory.models import Client, ScopeDefinition
from portal.audit import events_for
from portal.templatetags.registrar_display import reason_messages

MAX_LINEAGE_DEPTH = 10  # policy caps spawn depth far below this; the bound keeps the walk finite
MAX_DUPLICATE_ROWS = 20


def _tier_rank():
    return tier_rank()  # shared with the partial index request_queue_order_idx


def _approvals_so_far():
    # A correlated subquery rather than Count(): no GROUP BY over the whole queue, and the paginator's
    # COUNT(*) can drop it (a JOIN + GROUP BY would make every count aggregate 10,000 rows).
    return Coalesce(
        Subquery(
            Decision.objects.filter(request=OuterRef("pk"), kind=DecisionKind.APPROVE)
            .order_by()
            .values("request")
            .annotate(n=Count("pk"))
            .values("n")[:1],
            output_field=IntegerField(),
        ),
        0,
    )


def _with_review_data(qs: QuerySet) -> QuerySet:
    return (
        qs.select_related("owner", "team", "idp")
        .annotate(approvals_so_far=_approvals_so_far(), tier_rank=_tier_rank())
        .prefetch_related(
            Prefetch("decisions", queryset=Decision.objects.select_related("approver").order_by("created_at"))
        )
    )


def queue_for(user) -> QuerySet:
    """Pending requests this approver may decide: high tier first, then oldest first."""
    return _with_review_data(RegistrationRequest.objects.awaiting_decision_by(user)).order_by(
        "-tier_rank", "created_at", "pk"
    )


def requests_for_api() -> QuerySet:
    """All requests for the API list (filterable by state etc.), newest first within tier."""
    return _with_review_data(RegistrationRequest.objects.all()).order_by("-tier_rank", "created_at", "pk")


def requests_of_owner(user) -> QuerySet:
    """Requests the user sponsors, made with their tokens or pre-registered, newest first."""
    return (
        RegistrationRequest.objects.filter(Q(owner=user) | Q(token__owner=user) | Q(submitted_by=user))
        .select_related("owner", "team", "token", "client")
        .annotate(approvals_so_far=_approvals_so_far())
        .prefetch_related(
            Prefetch("decisions", queryset=Decision.objects.select_related("approver").order_by("created_at"))
        )
        .order_by("-created_at", "-pk")
    )


def scope_sensitivity() -> dict[str, str]:
    """Scope name -> sensitivity for badges (one query; the catalogue is small)."""
    return dict(ScopeDefinition.objects.values_list("name", "sensitivity"))


def sla_class(created_at, now=None) -> str:
    now = now or timezone.now()
    age = now - created_at
    if age >= timedelta(hours=settings.REGISTRAR_SLA_LATE_HOURS):
        return "sla-late"
    if age >= timedelta(hours=settings.REGISTRAR_SLA_WARN_HOURS):
        return "sla-warn"
    return "sla-ok"


def decorate_rows(rows, *, sensitivity: dict[str, str], now=None) -> list:
    """Attach display-only attributes (no queries) to each request on a page."""
    now = now or timezone.now()
    for row in rows:
        row.scope_badges = [(s, sensitivity.get(s, "refused")) for s in (row.requested_scopes or [])]
        row.sla = sla_class(row.created_at, now)
        row.reason_list = reason_messages(row.reasons)
        row.needed = max(row.approvals_needed, 1)
    return rows


@dataclass
class RequestDetail:
    reg_request: RegistrationRequest
    lineage: list[Client] = field(default_factory=list)
    scopes_added: list[str] = field(default_factory=list)
    scopes_removed: list[str] = field(default_factory=list)
    scopes_kept: list[str] = field(default_factory=list)
    owner_live_clients: list[Client] = field(default_factory=list)
    duplicate_clients: list[tuple[Client, list[str]]] = field(default_factory=list)
    duplicate_requests: list[tuple[RegistrationRequest, list[str]]] = field(default_factory=list)
    audit_events: list = field(default_factory=list)
    scope_badges: list[tuple[str, str]] = field(default_factory=list)
    granted_badges: list[tuple[str, str]] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    # High risk only: the working window for human approvals that applies (approvals.conditions), open now or not,
    # and when it opens next (in its own zone) when closed.
    approval_window: AppliedWindow | None = None
    window_open: bool = True
    window_opens_at: datetime | None = None  # aware, in the window's own zone

    @property
    def window_opens_text(self) -> str:
        """When the window opens next, in its own zone (the template's date filter would show the site's)."""
        opens = self.window_opens_at
        return f"{opens:%a %Y-%m-%d %H:%M} {opens.tzinfo}" if opens is not None else ""


def request_detail(public_id: str) -> RequestDetail:
    """Everything an approver needs on one page. Raises RegistrationRequest.DoesNotExist."""
    req = (
        _with_review_data(RegistrationRequest.objects.filter(public_id=public_id))
        .select_related("token", "token__owner", "issuer", "profile", "parent_client", "parent_client__owner", "client")
        .get()
    )
    detail = RequestDetail(reg_request=req)
    sensitivity = scope_sensitivity()
    detail.scope_badges = [(s, sensitivity.get(s, "refused")) for s in req.requested_scopes or []]
    detail.granted_badges = [(s, sensitivity.get(s, "refused")) for s in req.granted_scopes or []]
    req.sla = sla_class(req.created_at)
    req.needed = max(req.approvals_needed, 1)
    if req.risk_tier == RiskTier.HIGH:
        detail.approval_window = applicable_window(req)
        if detail.approval_window is not None:
            now = timezone.now()
            detail.window_open = detail.approval_window.window.is_open(now)
            if not detail.window_open:
                detail.window_opens_at = detail.approval_window.window.next_opening(now)

    # Lineage: parent, grandparent, ... (bounded by the spawn depth limit, not by the queue size).
    node = req.parent_client
    while node is not None and len(detail.lineage) < MAX_LINEAGE_DEPTH:
        detail.lineage.append(node)
        node = Client.objects.select_related("owner").filter(pk=node.parent_id).first() if node.parent_id else None
    if req.parent_client is not None:
        parent_scopes = set(req.parent_client.scopes or [])
        requested = set(req.requested_scopes or [])
        detail.scopes_added = sorted(requested - parent_scopes)
        detail.scopes_removed = sorted(parent_scopes - requested)
        detail.scopes_kept = sorted(requested & parent_scopes)

    if req.owner_id:
        detail.owner_live_clients = list(
            Client.objects.live()
            .filter(owner_id=req.owner_id)
            .exclude(registration_id=req.public_id)
            .exclude(pk=req.client_id or 0)  # a renewal's own client is not one of the owner's *other* clients
            .select_related("idp")
            .order_by("-created_at")[:MAX_DUPLICATE_ROWS]
        )

    uris = [u for u in (req.metadata or {}).get("redirect_uris", []) if isinstance(u, str)][:10]
    detail.redirect_uris = uris
    name = (req.client_name or "").strip()
    match = Q()
    if req.software_id:
        match |= Q(software_id=req.software_id)
    if name:
        match |= Q(name__iexact=name)
    for uri in uris:
        match |= Q(metadata__redirect_uris__icontains=f'"{uri}"')
    if match:
        for client in (
            Client.objects.live()
            .filter(match)
            .exclude(registration_id=req.public_id)
            .exclude(pk=req.client_id or 0)  # a renewal is not a near-duplicate of the client it renews
            .select_related("owner")
            .order_by("-created_at")[:MAX_DUPLICATE_ROWS]
        ):
            detail.duplicate_clients.append(
                (client, _why_duplicate(req, name, uris, client.software_id, client.name, client.metadata))
            )
        request_match = Q()
        if req.software_id:
            request_match |= Q(software_id=req.software_id)
        if name:
            request_match |= Q(client_name__iexact=name)
        for uri in uris:
            request_match |= Q(metadata__redirect_uris__icontains=f'"{uri}"')
        for other in (
            RegistrationRequest.objects.pending()
            .filter(request_match)
            .exclude(pk=req.pk)
            .select_related("owner")
            .order_by("-created_at")[:MAX_DUPLICATE_ROWS]
        ):
            detail.duplicate_requests.append(
                (other, _why_duplicate(req, name, uris, other.software_id, other.client_name, other.metadata))
            )

    detail.audit_events = _request_events(req)
    return detail


def _request_events(req: RegistrationRequest) -> list:
    """The request's audit trail. A renewal is filed as an event on its client (``client.renewal_requested``,
    naming the request), so that event and the client's later ones about this request belong here too."""
    events = list(events_for("registration_request", req.public_id))
    if req.kind == RequestKind.RENEWAL and req.client is not None:
        events += list(events_for("client", req.client.registration_id).filter(after__request=req.public_id))
        events.sort(key=lambda e: e.pk)
    return events


def _why_duplicate(req, name, uris, software_id, other_name, other_metadata) -> list[str]:
    why = []
    if req.software_id and software_id == req.software_id:
        why.append("same software_id")
    if name and (other_name or "").strip().lower() == name.lower():
        why.append("same name")
    other_uris = set((other_metadata or {}).get("redirect_uris", []) or [])
    overlap = sorted(set(uris) & other_uris)
    if overlap:
        why.append("shares redirect URI " + ", ".join(overlap))
    return why


@dataclass(frozen=True)
class StoredCimdDocument:
    """A request's Client ID Metadata Document as the approver sees it (templates/approvals/_cimd_document.html)."""

    url: str
    sha256: str
    review: Any
    text: str
    diff: str = ""  # a document change request: the change against the pinned document


def cimd_for_request(req: RegistrationRequest) -> StoredCimdDocument | None:
    """The document a CIMD request was judged on — URL, hash, host, every redirect host and whether it is the
    client_id's host, the warnings — or None for other requests."""
    if not req.cimd_url or req.cimd_document is None:
        return None
    import json

    from approvals.cimd.document import validate_cimd_document
    from approvals.metadata import MetadataError

    try:
        review = validate_cimd_document(req.cimd_url, req.cimd_document)
    except MetadataError:  # judged valid when submitted; shown as stored either way
        review = None
    text = json.dumps(req.cimd_document, indent=2, ensure_ascii=False)
    diff = req.verdict.get("diff", "") if req.kind == RequestKind.CIMD_CHANGE and isinstance(req.verdict, dict) else ""
    return StoredCimdDocument(url=req.cimd_url, sha256=req.cimd_sha256, review=review, text=text, diff=diff)
