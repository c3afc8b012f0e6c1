"""What approvals provides to inventory through ``inventory.hooks`` (registered in ``ApprovalsConfig.ready()``).

Inventory's lifecycle and break glass need facts and writes that belong to approvals; it may not import
approvals or reach its models by name, so approvals hands them over here:

- **policy limits** — the active policy's tier TTL ceilings, how many approvals a renewal review needs per
  tier, and the per-parent child limit; and the owner live-client limit ``inventory.quotas`` enforces;
- **renewal filer** — a renewal the lifecycle may not grant by itself becomes a pending
  ``RegistrationRequest(kind="renewal")`` in the same review queue as registrations;
- **containment scopes** — break glass "by initial access token", "by trusted issuer" and "by policy
  version": which clients each covers, and what else confirming does (the token is revoked, the issuer
  disabled, their pending requests withdrawn), each effect audited;
- **reads for inventory's pages** — a client's registration history (explain page, evidence pack), which
  clients have a renewal waiting (owner's list), registrations by outcome and time to decision (dashboard),
  and which clients carry two distinct human approvals (framework report);
- **sweeps** — ``lapsed`` (pending requests nobody decided in time: :func:`sweep_lapsed`, also the beat task's),
  ``unauthorized`` (refused-credential tallies) and ``cimd_drift`` (pinned CIMD documents due a re-fetch), run
  by ``manage.py sweep <name>``.

Over 400 lines on purpose: it is the one place approvals answers inventory's hooks; each answer is short, and
spreading them over modules would hide which facts inventory borrows from approvals.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import TruncDate
from django.utils import timezone

from approvals.choices import PolicyOutcome, RequestKind, RequestState
from approvals.cimd.pinning import pin_diff, pins_check_due
from approvals.counts import HUMAN_DECIDED, day_start, decision_seconds
from approvals.models import (
    CimdPin,
    Decision,
    InitialAccessToken,
    RegistrationRequest,
    RequestCoalescedCount,
    RequestCoalescedCountAllTeams,
    RequestCountDelta,
    RequestDayCount,
    RequestDayCountAllTeams,
    RequestDecisionCount,
    RequestDecisionCountAllTeams,
    TrustedIssuer,
)
from approvals.policy_store import active_policy
from approvals.services import request_lapse_due
from approvals.unauthorized import sweep_unauthorized
from inventory import hooks
from inventory.counts import as_date
from inventory.histograms import histogram_percentile
from inventory.models import Client
from inventory.selectors import counts
from inventory.services import new_registration_id
from inventory.sweeps import SweepResult
from portal.audit import Actor, audit_record, audit_record_many


def policy_limits() -> hooks.PolicyLimits:
    """The active policy, read fresh: renewals are rare, and one must never use a policy just replaced."""
    config = active_policy(use_cache=False)
    return hooks.PolicyLimits(
        version=config.version,
        ttl_ceilings=config.ttl_ceilings,
        renewal_approvals={"low": 1, "medium": config.approvals_medium, "high": config.approvals_high},
        max_children_per_parent=config.max_children_per_parent,
    )


def renewal_file(review: hooks.RenewalReview) -> RegistrationRequest:
    """The pending renewal request for ``review`` (in the lifecycle's transaction; it writes the audit event)."""
    client = review.client
    pending = RegistrationRequest.objects.filter(client=client, kind=RequestKind.RENEWAL, state=RequestState.PENDING)
    already = hooks.RenewalConflict(f"a renewal of {client.registration_id} is already waiting for review")
    if pending.exists():  # the common case; the partial unique index request_one_pending_renewal decides
        raise already
    try:
        with transaction.atomic():
            return _create_renewal_request(review)
    except IntegrityError as exc:
        if pending.exists():  # committed by a concurrent renewal since the check above
            raise already from exc
        raise


def _create_renewal_request(review: hooks.RenewalReview) -> RegistrationRequest:
    client = review.client
    config = active_policy(use_cache=False)
    reasons = [{"code": code, "message": message} for code, message in review.reasons]
    return RegistrationRequest.objects.create(
        public_id=new_registration_id(),
        kind=RequestKind.RENEWAL,
        state=RequestState.PENDING,
        via=client.created_via,
        client=client,
        client_name=client.name,
        software_id=client.software_id,
        purpose=client.purpose,
        requested_scopes=list(client.scopes),
        requested_ttl=review.ttl_seconds,
        audiences=list(client.audiences),
        internal_only=client.internal_only,
        idp=client.idp,
        owner=client.owner,
        team=client.team,
        parent_client=client.parent,
        policy_version=config.version,
        risk_tier=client.risk_tier,
        outcome="review",
        reasons=reasons,
        # The shape of a policy verdict (approvals.policy.Verdict.to_dict), so readers need no special case.
        verdict={
            "policy_version": config.version,
            "tier": client.risk_tier,
            "outcome": "review",
            "reasons": reasons,
            "granted_scopes": list(client.scopes),
            "ttl_seconds": review.ttl_seconds,
            "approvals_needed": review.approvals_needed,
            "error": None,
            "kind": "renewal",
        },
        approvals_needed=review.approvals_needed,
        decision_reason="",
    )


def owner_live_limit() -> int:
    """The active policy's cap on an owner's live clients (cached a few seconds: read on every registration)."""
    return active_policy().max_live_clients_per_owner


# --- reads for inventory's pages -------------------------------------------------------------------------


def registration_history(client: Client) -> list[hooks.RegistrationRecord]:
    """The client's own registration request and every later one about it (renewals), oldest first, each with
    its decisions: two queries."""
    reg_requests = list(
        RegistrationRequest.objects.filter(Q(public_id=client.registration_id) | Q(client=client))
        .select_related("token", "issuer", "owner")
        .order_by("created_at")
    )
    decisions: dict[int, list[Decision]] = defaultdict(list)
    for decision in Decision.objects.filter(request__in=[r.pk for r in reg_requests]).select_related("approver"):
        decisions[decision.request_id].append(decision)
    return [hooks.RegistrationRecord(reg_request=r, decisions=decisions.get(r.pk, [])) for r in reg_requests]


def pending_renewals():
    return RegistrationRequest.objects.filter(kind=RequestKind.RENEWAL, state=RequestState.PENDING)


def _outcome_label(state: str, outcome: str) -> str | None:
    if state == RequestState.APPROVED:
        return "auto-approved" if outcome == "auto_approve" else "human-approved"
    if state == RequestState.DENIED:
        return "denied"
    if state == RequestState.REFUSED:
        return "refused"
    return None


def registration_stats(start: datetime, team_id: int | None = None) -> hooks.RegistrationStats:
    """Registrations submitted since ``start``'s UTC day (for one team, or all) per day by outcome, and the
    median / p90 seconds from submission to a human decision for those decided since then — from the counts
    kept as requests change (``approvals.counts``), never from the request table: two statements, each the
    folded rollup plus the deltas not folded yet."""
    since = start.astimezone(UTC).date()
    begin = day_start(since)
    team = Q() if team_id is None else Q(team_id=team_id)
    deltas = RequestCountDelta.objects.filter(team)
    created_day = TruncDate("created_at", tzinfo=UTC)
    # every team: the all-teams projections (approvals.counts.PROJECTIONS), rows per day, not per day × team
    by_day = counts.rollup_rows((RequestDayCountAllTeams, RequestDayCount), {"day", "state"}, team_id=team_id)
    coalesced_by_day = counts.rollup_rows(
        (RequestCoalescedCountAllTeams, RequestCoalescedCount), {"day"}, team_id=team_id
    )
    decided_by_day = counts.rollup_rows(
        (RequestDecisionCountAllTeams, RequestDecisionCount), {"bucket"}, team_id=team_id
    )
    rows = counts.union_sum(
        [
            (by_day.filter(day__gte=since), _by_outcome("n", "day"), "n"),
            (coalesced_by_day.filter(day__gte=since), _by_outcome("c", "day"), "n"),
            (deltas.filter(created_at__gte=begin), _by_outcome("n", created_day), "n"),
            (
                deltas.filter(created_at__gte=begin, coalesced_count__gt=0),
                _by_outcome("c", created_day),
                F("n") * F("coalesced_count"),
            ),
        ],
        width=4,
    )
    outcomes: dict[str, Counter] = {label: Counter() for label in hooks.REGISTRATION_OUTCOMES}
    coalesced = 0
    for measure, state, outcome, day, n in rows:
        if measure == "c":
            coalesced += int(n)
        elif label := _outcome_label(state, outcome):
            outcomes[label][as_date(day)] += int(n)
    decisions = counts.histogram(
        decided_by_day.filter(day__gte=since),
        deltas.filter(decided_at__gte=begin, state__in=HUMAN_DECIDED).exclude(outcome=PolicyOutcome.AUTO_APPROVE),
        ("state", "outcome", "created_at", "decided_at"),
        decision_seconds,
    )
    return hooks.RegistrationStats(
        outcomes=outcomes,
        median_seconds_to_decision=histogram_percentile(decisions, 0.5),
        p90_seconds_to_decision=histogram_percentile(decisions, 0.9),
        coalesced=coalesced,
    )


def _by_outcome(measure: str, day) -> dict:
    """The key columns of one member of :func:`registration_stats`' union: measure (``n`` requests, ``c``
    coalesced registrations), state, outcome, day."""
    if measure == "c":
        return {"measure": Value("c"), "state": Value(""), "outcome": Value(""), "day": day}
    return {"measure": Value("n"), "state": "state", "outcome": "outcome", "day": day}


# --- break glass scopes ----------------------------------------------------------------------------------


def _by_id_or(model, value: str, **lookup):
    """The one row ``lookup`` names, else the row with that id; a lookup that names several is refused, never
    guessed (two tokens can share a prefix)."""
    matches = list(model.objects.filter(**lookup)[:2])
    if len(matches) > 1:
        raise ValueError(f"{value!r} names more than one {model._meta.verbose_name}; give its id instead")
    if matches:
        return matches[0]
    return model.objects.filter(pk=int(value)).first() if value.isdigit() else None


def _client_ids(reg_requests) -> list[int]:
    return list(reg_requests.filter(client__isnull=False).values_list("client_id", flat=True).distinct())


def _withdraw_pending(reg_requests, *, actor: Actor, reason: str) -> int:
    """Withdraw the pending requests a leaked credential filed: no approver may approve them afterwards."""
    rows = list(
        reg_requests.filter(state=RequestState.PENDING)
        .select_for_update()
        .values_list("pk", "public_id", "policy_version")
    )
    if not rows:
        return 0
    now = timezone.now()
    RegistrationRequest.objects.filter(pk__in=[r[0] for r in rows], state=RequestState.PENDING).update(
        state=RequestState.WITHDRAWN, decided_at=now, decision_reason=reason[:2000]
    )
    audit_record_many(
        [
            {
                "actor": actor,
                "action": "request.withdraw.breakglass",
                "object_type": "registration_request",
                "object_id": public_id,
                "before": {"state": RequestState.PENDING},
                "after": {"state": RequestState.WITHDRAWN},
                "reason": reason,
                "policy_version": version,
            }
            for _pk, public_id, version in rows
        ]
    )
    return len(rows)


def _pending_sentence(count: int, source: str) -> list[str]:
    if not count:
        return []
    return [f"withdraw {count} pending registration request{'s' if count != 1 else ''} made with {source}"]


def resolve_token(value: str) -> hooks.ContainmentTarget | None:
    token = _by_id_or(InitialAccessToken, value, prefix=value)
    if token is None:
        return None
    reg_requests = RegistrationRequest.objects.filter(token=token)
    name = f"initial access token {token.prefix}…"
    pending = reg_requests.filter(state=RequestState.PENDING).count()
    if token.revoked_at is not None:
        effects = [f"{name} is already revoked (since {token.revoked_at:%Y-%m-%d %H:%M} UTC)"]
    else:
        effects = [f"revoke {name}: it can register nothing more ({token.uses} of {token.max_uses} uses spent)"]
    effects += _pending_sentence(pending, "it")

    def apply(actor: Actor, reason: str) -> None:
        locked = InitialAccessToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
            audit_record(
                actor=actor,
                action="token.revoke.breakglass",
                object_type="initial_access_token",
                object_id=locked.pk,
                before={"revoked": False},
                after={"revoked": True, "prefix": locked.prefix, "uses": locked.uses},
                reason=reason,
            )
        _withdraw_pending(RegistrationRequest.objects.filter(token=locked), actor=actor, reason=reason)

    return hooks.ContainmentTarget(label=name, client_ids=_client_ids(reg_requests), effects=effects, apply=apply)


def resolve_issuer(value: str) -> hooks.ContainmentTarget | None:
    issuer = _by_id_or(TrustedIssuer, value, name=value)
    if issuer is None:
        return None
    reg_requests = RegistrationRequest.objects.filter(issuer=issuer)
    name = f"software-statement issuer {issuer.name}"
    pending = reg_requests.filter(state=RequestState.PENDING).count()
    if issuer.enabled:
        effects = [
            f"disable trusted issuer {issuer.name} ({issuer.issuer}): its software statements are refused "
            "until an admin enables it again"
        ]
    else:
        effects = [f"trusted issuer {issuer.name} is already disabled"]
    effects += _pending_sentence(pending, "its statements")

    def apply(actor: Actor, reason: str) -> None:
        locked = TrustedIssuer.objects.select_for_update().get(pk=issuer.pk)
        if locked.enabled:
            locked.enabled = False
            locked.save(update_fields=["enabled"])
            audit_record(
                actor=actor,
                action="issuer.disable.breakglass",
                object_type="trusted_issuer",
                object_id=locked.pk,
                before={"enabled": True},
                after={"enabled": False, "name": locked.name, "issuer": locked.issuer},
                reason=reason,
            )
        _withdraw_pending(RegistrationRequest.objects.filter(issuer=locked), actor=actor, reason=reason)

    return hooks.ContainmentTarget(label=name, client_ids=_client_ids(reg_requests), effects=effects, apply=apply)


def resolve_policy(value: str) -> hooks.ContainmentTarget | None:
    if not value.isdigit():
        raise ValueError("a policy version is a number")
    version = int(value)
    via_requests = _client_ids(RegistrationRequest.objects.filter(policy_version=version))
    direct = list(Client.objects.filter(policy_version=version).values_list("pk", flat=True))
    return hooks.ContainmentTarget(label=f"policy version {version}", client_ids=sorted(set(via_requests + direct)))


# --- sweeps -------------------------------------------------------------------------------------------------


def sweep_lapsed(*, now: datetime | None = None, batch_size: int | None = None) -> SweepResult:
    """Lapse pending requests nobody decided within ``REGISTRAR_REQUEST_LAPSE_DAYS``: the one entry point, for
    ``manage.py sweep lapsed`` and the beat task ``approvals.tasks.sweep_lapsed``
    (the rule: :func:`approvals.services.request_lapse_due`)."""
    result = SweepResult("lapsed")
    result.counts["lapsed"] = request_lapse_due(now=now, batch_size=batch_size)
    return result


def sweep_cimd_drift(*, now: datetime | None = None, batch_size: int | None = None) -> SweepResult:
    """Re-fetch the pinned CIMD documents that are due (``approvals.cimd.pinning``): ``manage.py sweep
    cimd_drift`` and the beat task ``approvals.tasks.check_cimd_pins``."""
    result = SweepResult("cimd_drift")
    result.counts.update(pins_check_due(now=now, limit=batch_size or 200))
    return result


def metadata_document_pin(client: Client) -> hooks.MetadataDocumentPin | None:
    """The client's pinned CIMD document for the explain page, with the pending change's diff if there is one."""
    pin = CimdPin.objects.select_related("change_request").filter(client=client).first()
    if pin is None:
        return None
    change = pin.change_request
    pending = change.public_id if change is not None and change.state == RequestState.PENDING else None
    return hooks.MetadataDocumentPin(
        url=pin.url,
        sha256=pin.sha256,
        pinned_at=pin.pinned_at,
        next_check_at=pin.next_check_at,
        last_fetched_at=pin.last_fetched_at,
        last_result=pin.last_result,
        last_reasons=tuple(pin.last_reasons or ()),
        last_error=pin.last_error,
        unreachable_since=pin.unreachable_since,
        diff=pin_diff(pin),
        pending_change=pending,
    )


def register() -> None:
    hooks.register_policy_limits(policy_limits)
    hooks.register_owner_live_limit(owner_live_limit)
    hooks.register_renewal_filer(renewal_file)
    hooks.register_containment_scope("token", resolve_token)
    hooks.register_containment_scope("issuer", resolve_issuer)
    hooks.register_containment_scope("policy", resolve_policy)
    hooks.register_registration_history(registration_history)
    hooks.register_pending_renewals(pending_renewals)
    hooks.register_registration_stats(registration_stats)
    hooks.register_sweep("lapsed", sweep_lapsed)
    hooks.register_sweep("unauthorized", sweep_unauthorized)
    hooks.register_sweep("cimd_drift", sweep_cimd_drift)
    hooks.register_metadata_document_pin(metadata_document_pin)


__all__ = [
    "metadata_document_pin",
    "owner_live_limit",
    "pending_renewals",
    "policy_limits",
    "register",
    "registration_history",
    "registration_stats",
    "renewal_file",
    "resolve_issuer",
    "resolve_policy",
    "resolve_token",
    "sweep_cimd_drift",
    "sweep_lapsed",
]
