"""Pinning and drift of Client ID Metadata Documents (docs/cimd.md "Pinning and drift").

- ``pin_create`` — in the transaction that creates an approved CIMD client (``request_client_create``): the
  document reviewed, its SHA-256 and key set become the client's ``CimdPin``.
- ``pin_check`` — re-fetch one pinned document (``get_document(refresh=True)``, every fetcher rule applies) and
  judge it against the pin with ``approvals.cimd.drift.classify``:

  * ``same`` / ``neutral``: nothing changes (the check is recorded on the pin);
  * ``narrowing``: applied to the client through the lifecycle (``inventory.services.client_narrow``: one audit
    event, the IdP updated through the outbox) and pinned;
  * ``widening``: a ``cimd_change`` request goes to the review queue (at least the medium tier; four eyes when
    the client is high risk) and the client, at the IdP too, keeps the pinned document until it is approved
    (``pin_change_apply``, called by the approval). A change already filed for that exact document is not filed
    again, whatever became of it;
  * the fetch refused (unreachable, not 200, invalid …): the pin is flagged ``unreachable_since`` (audited
    once), and when that lasts ``REGISTRAR_CIMD_UNREACHABLE_GRACE_HOURS`` (72 h) the client is suspended through
    the lifecycle with a policy hold (security or an admin lifts it). A good fetch clears the flag.

- ``pins_check_due`` — the beat task's sweep: pins whose ``next_check_at`` has come, each checked on its own. The
  next check is the document's cache lifetime later (``Cache-Control`` clamped to the cache bounds), or the
  lower bound after a refusal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.choices import PolicyOutcome, RequestKind, RequestState
from approvals.cimd.document import validate_cimd_document
from approvals.cimd.drift import NARROWING, WIDENING, classify, document_diff
from approvals.cimd.fetch import CimdDocument, CimdRefused, get_document, key_set
from approvals.metadata import MetadataError
from approvals.models import CimdPin, RegistrationRequest
from approvals.policy_store import active_policy
from inventory.choices import LIVE_STATES, ClientState, CreatedVia, HoldKind, RiskTier
from inventory.keys import jwks_thumbprints
from inventory.lifecycle import Hold, client_transition
from inventory.models import Client
from inventory.services import client_narrow, new_registration_id
from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)

ACTOR = Actor.system("cimd-drift")
REFUSED = "refused"
TIER_ORDER = (RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH)


def _min_seconds() -> int:
    return int(settings.REGISTRAR_CIMD_CACHE_MIN_SECONDS)


def pin_create(*, client: Client, reg_request: RegistrationRequest, now: datetime) -> CimdPin:
    """Pin the document an approved CIMD request was reviewed on (in the caller's transaction)."""
    document = reg_request.cimd_document or {}
    keys = document.get("jwks") or reg_request.fetched_jwks
    return CimdPin.objects.create(
        client=client,
        url=reg_request.cimd_url,
        sha256=reg_request.cimd_sha256,
        document=document,
        keys=keys,
        pinned_at=now,
        next_check_at=now + timedelta(seconds=_min_seconds()),
    )


@dataclass(frozen=True)
class CheckResult:
    """What ``pin_check`` found and did: ``result`` is same/neutral/narrowing/widening/refused (or gone/ended)."""

    result: str
    action: str = ""  # applied, change_requested, flagged, suspended, recovered, ""


def _fetch(pin: CimdPin) -> tuple[CimdDocument, dict[str, Any] | None]:
    fetched = get_document(pin.url, refresh=True)
    return fetched, key_set(fetched)


def pin_check(*, pin_id: int, now: datetime | None = None) -> CheckResult:
    """Re-fetch and judge one pinned document (module docstring). The fetch runs outside any transaction."""
    now = now or timezone.now()
    pin = CimdPin.objects.select_related("client").filter(pk=pin_id).first()
    if pin is None:
        return CheckResult("gone")
    if pin.client.state not in LIVE_STATES:
        CimdPin.objects.filter(pk=pin.pk).update(next_check_at=now + timedelta(days=365))
        return CheckResult("ended")
    try:
        fetched, keys = _fetch(pin)
        return _judge(pin.pk, fetched, keys, now)
    except CimdRefused as exc:
        return _refused(pin.pk, exc, now)


def _lock(pin_id: int) -> CimdPin:
    return CimdPin.objects.select_for_update().select_related("client").get(pk=pin_id)


@transaction.atomic
def _refused(pin_id: int, exc: CimdRefused, now: datetime) -> CheckResult:
    pin = _lock(pin_id)
    client = pin.client
    pin.last_fetched_at = now
    pin.last_result = REFUSED
    pin.last_error = f"{exc.code}: {exc.reason}"[:500]
    pin.next_check_at = now + timedelta(seconds=_min_seconds())
    action = ""
    grace = timedelta(hours=int(settings.REGISTRAR_CIMD_UNREACHABLE_GRACE_HOURS))
    if pin.unreachable_since is None:
        pin.unreachable_since = now
        action = "flagged"
        audit_record(
            actor=ACTOR,
            action="cimd.unreachable",
            object_type="client",
            object_id=client.registration_id,
            after={
                "url": pin.url,
                "code": exc.code,
                "reason": exc.reason[:500],
                "grace_hours": grace / timedelta(hours=1),
            },
            reason=f"the client metadata document cannot be used ({exc.code}): {exc.reason}"[:2000],
            policy_version=client.policy_version,
        )
    elif now - pin.unreachable_since >= grace and client.state == ClientState.ACTIVE:
        since = pin.unreachable_since.strftime("%Y-%m-%d %H:%M UTC")
        why = f"its client metadata document has been unusable since {since} ({exc.code}: {exc.reason})"[:2000]
        client_transition(
            client=client,
            target=ClientState.SUSPENDED,
            actor=ACTOR,
            reason=why,
            action="client.suspend",
            hold=Hold(kind=HoldKind.POLICY, by_id=None, reason=why),
        )
        action = "suspended"
    pin.save()
    log_event(logger, "cimd_pin_refused", client=client.registration_id, code=exc.code, action=action or None)
    return CheckResult(REFUSED, action)


def pin_judge(*, pin_id: int, fetched: CimdDocument, keys: dict[str, Any] | None, now: datetime) -> CheckResult:
    """Judge a document already in hand against the pin (what ``pin_check`` does after its fetch; the demo seed
    uses it to show a pending change without a document host)."""
    return _judge(pin_id, fetched, keys, now)


def _judge(pin_id: int, fetched: CimdDocument, keys: dict[str, Any] | None, now: datetime) -> CheckResult:
    with transaction.atomic():
        pin = _lock(pin_id)
        client = pin.client
        recovered = pin.unreachable_since is not None
        pinned = _pinned_review(pin)
        drift = classify(
            pinned_sha256=pin.sha256,
            pinned=pinned,
            pinned_document=pin.document,
            pinned_keys=pin.keys,
            fetched_sha256=fetched.sha256,
            fetched=fetched.review,
            fetched_document=fetched.document,
            fetched_keys=keys,
        )
        pin.last_fetched_at = now
        pin.last_sha256 = fetched.sha256
        pin.last_result = drift.kind
        pin.last_reasons = list(drift.widening) + list(drift.narrowing)
        pin.last_diff = drift.diff
        pin.last_error = ""
        pin.unreachable_since = None
        pin.next_check_at = now + timedelta(seconds=fetched.max_age)
        action = "recovered" if recovered else ""
        if recovered:
            audit_record(
                actor=ACTOR,
                action="cimd.reachable",
                object_type="client",
                object_id=client.registration_id,
                after={"url": pin.url, "sha256": fetched.sha256, "drift": drift.kind},
                reason="the client metadata document answers again",
                policy_version=client.policy_version,
            )
        if drift.kind == NARROWING:
            _apply(
                pin,
                client,
                fetched,
                keys,
                reason="the client metadata document narrowed: " + "; ".join(drift.narrowing),
            )
            action = "applied"
        elif drift.kind == WIDENING:
            # One change waits at a time (the approver judges it; a newer document is seen at the next check after
            # that decision), and a document already judged is not filed again.
            filed = pin.change_request
            if filed is None or (filed.state != RequestState.PENDING and filed.cimd_sha256 != fetched.sha256):
                pin.change_request = _file_change(pin, client, fetched, keys, list(drift.widening), drift.diff)
                action = "change_requested"
        pin.save()
    log_event(logger, "cimd_pin_checked", client=client.registration_id, drift=drift.kind, action=action or None)
    return CheckResult(drift.kind, action)


def _pinned_review(pin: CimdPin):
    try:
        return validate_cimd_document(pin.url, pin.document)
    except MetadataError as exc:  # the rules tightened since it was pinned: judge against what it says anyway
        raise CimdRefused("invalid", f"the pinned document no longer validates: {exc.description}", url=pin.url)


def _apply(
    pin: CimdPin,
    client: Client,
    fetched: CimdDocument,
    keys: dict[str, Any] | None,
    *,
    reason: str,
    actor: Actor = ACTOR,
    action: str = "client.narrow",
    policy_version: int | None = None,
) -> None:
    """Give the client the fetched document's metadata and keys (its scopes only narrow), and pin it."""
    md = fetched.review.metadata
    removed_scopes = set(pinned_scope(pin)) - set(md.scope)
    metadata = md.to_response_dict()
    for name in ("client_id", "purpose", "requested_ttl", "audiences", "internal_only"):
        metadata.pop(name, None)
        if name in (client.metadata or {}):
            metadata[name] = client.metadata[name]
    client_narrow(
        client=client,
        actor=actor,
        scopes=[s for s in client.scopes if s not in removed_scopes],
        expires_at_most=None,
        metadata=metadata,
        name=md.client_name,
        auth_method=md.token_endpoint_auth_method,
        jwks=keys,
        jwks_uri=md.jwks_uri or "",
        software_version=md.software_version or "",
        keys_audit={"source": "cimd", "url": pin.url, "sha256": fetched.sha256, "thumbprints": jwks_thumbprints(keys)},
        reason=reason[:2000],
        policy_version=policy_version,
        action=action,
    )
    pin.sha256 = fetched.sha256
    pin.document = fetched.document
    pin.keys = keys
    pin.pinned_at = timezone.now()


def pinned_scope(pin: CimdPin) -> list[str]:
    scope = (pin.document or {}).get("scope")
    return scope.split() if isinstance(scope, str) else []


def _file_change(
    pin: CimdPin, client: Client, fetched: CimdDocument, keys: dict[str, Any] | None, widening: list[str], diff: str
) -> RegistrationRequest:
    """The pending ``cimd_change`` request for a widening document (in the caller's transaction, audited)."""
    config = active_policy()
    tier = max(client.risk_tier or RiskTier.MEDIUM, RiskTier.MEDIUM, key=TIER_ORDER.index)
    needed = config.approvals_high if tier == RiskTier.HIGH else config.approvals_medium
    remaining = int((client.expires_at - timezone.now()).total_seconds()) if client.expires_at else None
    reasons = [{"code": "cimd_document_widened", "message": w} for w in widening]
    reg_request = RegistrationRequest.objects.create(
        public_id=new_registration_id(),
        kind=RequestKind.CIMD_CHANGE,
        state=RequestState.PENDING,
        via=CreatedVia.CIMD,
        metadata=fetched.review.metadata.to_response_dict(),
        client_name=fetched.review.metadata.client_name or client.name,
        purpose=client.purpose,
        requested_scopes=list(client.scopes),
        granted_scopes=list(client.scopes),
        granted_ttl=max(60, remaining) if remaining is not None else client.ceiling_ttl_seconds,
        audiences=list(client.audiences or []),
        internal_only=client.internal_only,
        fetched_jwks=keys if fetched.review.metadata.jwks is None else None,
        idp=client.idp,
        owner=client.owner,
        team=client.team,
        client=client,
        cimd_url=pin.url,
        cimd_sha256=fetched.sha256,
        cimd_document=fetched.document,
        policy_version=config.version,
        risk_tier=tier,
        outcome=PolicyOutcome.REVIEW,
        reasons=reasons,
        verdict={"drift": WIDENING, "diff": diff},
        approvals_needed=needed,
    )
    audit_record(
        actor=ACTOR,
        action="cimd.change_requested",
        object_type="registration_request",
        object_id=reg_request.public_id,
        after={"client": client.registration_id, "url": pin.url, "sha256": fetched.sha256, "widening": widening},
        reason="the client metadata document widened: " + "; ".join(widening)[:1900],
        policy_version=config.version,
    )
    return reg_request


def pin_change_apply(reg_request: RegistrationRequest, *, actor: Actor, reason: str) -> None:
    """Apply an approved ``cimd_change`` request (in the approval's transaction): the client takes the document
    that was reviewed (not whatever is served now) and it is pinned. Raises ValueError when nothing is pinned."""
    pin = (
        CimdPin.objects.select_for_update().select_related("client").filter(client_id=reg_request.client_id).first()
        if reg_request.client_id is not None
        else None
    )
    if pin is None or reg_request.cimd_document is None:
        raise ValueError("this change request has no pinned document to replace")
    try:
        review = validate_cimd_document(pin.url, reg_request.cimd_document)
    except MetadataError as exc:
        raise ValueError(f"the reviewed document no longer validates: {exc.description}") from None
    reviewed = CimdDocument(
        url=pin.url,
        body=json.dumps(reg_request.cimd_document).encode(),  # not kept: the hash is the reviewed body's
        sha256=reg_request.cimd_sha256,
        document=reg_request.cimd_document,
        review=review,
        fetched_at=0.0,
        expires_at=0.0,
        max_age=0,
        cache_control="",
        address="",
    )
    keys = reg_request.cimd_document.get("jwks") or reg_request.fetched_jwks
    _apply(
        pin,
        pin.client,
        reviewed,
        keys,
        reason=f"document change {reg_request.public_id} approved: {reason}",
        actor=actor,
        action="client.cimd_change",
        policy_version=reg_request.policy_version,
    )
    pin.change_request = reg_request
    pin.save()


def pin_diff(pin: CimdPin) -> str:
    """The diff of the pending change (if any) against the pinned document, else the last check's."""
    change = pin.change_request
    if change is not None and change.state == RequestState.PENDING and change.cimd_document is not None:
        return document_diff(pin.document, change.cimd_document)
    return pin.last_diff


def pins_check_due(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """Check every pin due (``next_check_at`` passed), oldest first, at most ``limit``; counts by result."""
    now = now or timezone.now()
    ids = list(
        CimdPin.objects.filter(next_check_at__lte=now).order_by("next_check_at").values_list("pk", flat=True)[:limit]
    )
    counts: dict[str, int] = {}
    for pin_id in ids:
        result = pin_check(pin_id=pin_id, now=now)
        key = result.action or result.result
        counts[key] = counts.get(key, 0) + 1
    return counts


__all__ = [
    "CheckResult",
    "pin_change_apply",
    "pin_check",
    "pin_create",
    "pin_diff",
    "pin_judge",
    "pins_check_due",
]
