"""The one registry through which inventory reaches the approvals app without importing it.

Imports point one way (``approvals -> inventory -> portal``), and a lower layer does not reach a higher
one by ``apps.get_model``, ``import_module`` or string-named writes either (``tests/test_architecture.py``
enforces it). Where inventory needs something only approvals knows, approvals registers an implementation
here at start-up (``ApprovalsConfig.ready()`` -> ``approvals.inventory_hooks.register``) and inventory calls
it through the functions below:

- **policy limits** — the active policy's tier TTL ceilings, renewal review sizes, the per-parent child limit;
- **owner live limit** — the policy's ``max_live_clients_per_owner``, enforced by ``inventory.quotas``;
- **renewal review** — filing a renewal the lifecycle may not grant by itself;
- **containment scopes** — break glass by initial access token, trusted issuer or policy version;
- **registration history** — a client's registration and renewal requests with their decisions (explain page,
  evidence pack);
- **pending renewals** — which clients have a renewal waiting for review (owner's list);
- **registration stats** — registrations per day by outcome and time to decision (the sprawl dashboard);
- **two-person approval** — which clients carry two distinct human approvals (the framework report);
- **metadata document pin** — a CIMD client's pinned document, last fetch and pending change (explain page).

Nothing registered (inventory on its own, or a unit test that resets the registry) degrades safely: the
policy limits are the documented defaults, the owner quota is not capped, a renewal that needs review is
refused with a clear error instead of being granted, the break-glass scopes that need approvals are unknown,
and the pages show no registration history, no pending renewals, no registrations and no human approvals.

Every hook that writes runs inside the caller's transaction and must not commit; each write it makes is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from inventory.ceilings import DEFAULT_TTL_CEILINGS, default_ttl_ceiling

if TYPE_CHECKING:  # pragma: no cover
    from django.db.models import QuerySet

    from inventory.models import Client
    from portal.audit import Actor


class HookMissing(RuntimeError):
    """No implementation is registered for a hook that has no safe default."""


# --- policy limits --------------------------------------------------------------------------------

DEFAULT_MAX_CHILDREN_PER_PARENT = 10
# Human approvals a renewal review needs per tier when no policy says otherwise; a low-tier client
# that goes back to review still needs one person (its policy outcome was "no human needed").
DEFAULT_RENEWAL_APPROVALS = {"low": 1, "medium": 1, "high": 2}


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """The active policy's thresholds inventory enforces (renewal ceilings, review sizes, spawning)."""

    version: int | None = None
    ttl_ceilings: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TTL_CEILINGS))
    renewal_approvals: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_RENEWAL_APPROVALS))
    max_children_per_parent: int = DEFAULT_MAX_CHILDREN_PER_PARENT

    def ttl_ceiling(self, risk_tier: str) -> int:
        value = self.ttl_ceilings.get(str(risk_tier))
        return value if isinstance(value, int) and value > 0 else default_ttl_ceiling(risk_tier)

    def approvals_for(self, risk_tier: str) -> int:
        fallback = DEFAULT_RENEWAL_APPROVALS.get(str(risk_tier), DEFAULT_RENEWAL_APPROVALS["high"])
        return max(1, int(self.renewal_approvals.get(str(risk_tier), fallback)))


_policy_limits: Callable[[], PolicyLimits] | None = None


def register_policy_limits(provider: Callable[[], PolicyLimits]) -> None:
    """Approvals: ``provider()`` returns the active policy's limits (it may cache for a few seconds)."""
    global _policy_limits
    _policy_limits = provider


def policy_limits() -> PolicyLimits:
    return _policy_limits() if _policy_limits is not None else PolicyLimits()


# --- renewal review -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenewalReview:
    """A renewal inventory may not grant by itself: approvals files it in the review queue."""

    client: Client
    actor: Actor
    ttl_seconds: int
    reasons: Sequence[tuple[str, str]]  # (stable code, message) — why it needs people
    approvals_needed: int
    note: str = ""  # what the person renewing wrote


class RenewalConflict(Exception):
    """A renewal of this client is already waiting for review (raised by the filer)."""


_renewal_filer: Callable[[RenewalReview], Any] | None = None


def register_renewal_filer(filer: Callable[[RenewalReview], Any]) -> None:
    """Approvals: ``filer(review)`` writes the pending renewal request and returns it (no audit event: the
    lifecycle audits the renewal on the client), or raises :class:`RenewalConflict`."""
    global _renewal_filer
    _renewal_filer = filer


def renewal_review_file(review: RenewalReview) -> Any:
    if _renewal_filer is None:
        raise HookMissing("renewals that need review cannot be filed: the approvals app is not installed")
    return _renewal_filer(review)


# --- containment scopes for break glass -----------------------------------------------------------


@dataclass(frozen=True)
class ContainmentTarget:
    """What a break-glass scope owned by another app resolves to.

    ``client_ids`` are the matched clients (break glass adds their descendants). ``effects`` say, in words
    for the preview, what confirming does besides suspending or retiring the clients (revoke a token,
    disable an issuer); ``apply(actor, reason)`` does it in the caller's transaction, audited.
    """

    label: str
    client_ids: Sequence[int]
    effects: Sequence[str] = ()
    apply: Callable[[Actor, str], None] | None = None


# value -> target; None when nothing matches; ValueError (message shown) when the value is malformed.
ContainmentResolver = Callable[[str], "ContainmentTarget | None"]
_containment: dict[str, ContainmentResolver] = {}


def register_containment_scope(scope: str, resolver: ContainmentResolver) -> None:
    _containment[scope] = resolver


def containment_resolver(scope: str) -> ContainmentResolver | None:
    return _containment.get(scope)


# --- owner live limit -------------------------------------------------------------------------------

_owner_live_limit: Callable[[], int | None] | None = None


def register_owner_live_limit(source: Callable[[], int | None]) -> None:
    """Approvals: ``source()`` returns the active policy's ``max_live_clients_per_owner`` (None: no cap)."""
    global _owner_live_limit
    _owner_live_limit = source


def owner_live_limit() -> int | None:
    """The current limit, or None when no policy is registered (then nothing is capped)."""
    return _owner_live_limit() if _owner_live_limit is not None else None


# --- reads for the pages: registration history, pending renewals, stats, two-person approval -----------


@dataclass(frozen=True)
class RegistrationRecord:
    """One registration or renewal request of a client and its human decisions (approvals' model instances:
    templates and the evidence pack read their fields)."""

    reg_request: Any  # approvals' RegistrationRequest
    decisions: Sequence[Any] = ()


@dataclass(frozen=True)
class RegistrationStats:
    """Registrations decided per day by outcome label, and time from submission to a human decision."""

    outcomes: Mapping[str, Mapping[date, int]]
    median_seconds_to_decision: float | None = None
    p90_seconds_to_decision: float | None = None
    # Anonymous registrations answered with an identical live one instead of a new client (docs/mcp.md).
    coalesced: int = 0


REGISTRATION_OUTCOMES = ("auto-approved", "human-approved", "denied", "refused")

_providers: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class MetadataDocumentPin:
    """A CIMD client's pinned Client ID Metadata Document and what the drift check last found (explain page)."""

    url: str
    sha256: str
    pinned_at: datetime
    next_check_at: datetime
    last_fetched_at: datetime | None = None
    last_result: str = ""
    last_reasons: Sequence[str] = ()
    last_error: str = ""
    unreachable_since: datetime | None = None
    diff: str = ""
    pending_change: str | None = None  # the public id of the change request waiting for review


def register_metadata_document_pin(provider: Callable[[Client], MetadataDocumentPin | None]) -> None:
    """Approvals: ``provider(client)`` is the client's pinned metadata document, or None."""
    _providers["metadata_document_pin"] = provider


def metadata_document_pin(client: Client) -> MetadataDocumentPin | None:
    provider = _providers.get("metadata_document_pin")
    return provider(client) if provider is not None else None


def register_registration_history(provider: Callable[[Client], Sequence[RegistrationRecord]]) -> None:
    """Approvals: ``provider(client)`` lists the client's requests (oldest first), each with its decisions."""
    _providers["registration_history"] = provider


def registration_history(client: Client) -> list[RegistrationRecord]:
    provider = _providers.get("registration_history")
    return list(provider(client)) if provider is not None else []


def register_pending_renewals(provider: Callable[[], QuerySet]) -> None:
    """Approvals: ``provider()`` is a queryset of the renewals waiting for review, filterable by ``client``."""
    _providers["pending_renewals"] = provider


def pending_renewals() -> QuerySet | None:
    """The renewals waiting for review, to filter by client in a subquery (one query with the page), or None."""
    provider = _providers.get("pending_renewals")
    return provider() if provider is not None else None


def register_registration_stats(provider: Callable[..., RegistrationStats]) -> None:
    """Approvals: ``provider(start, team_id)`` counts the registrations submitted since ``start`` (of one team,
    or all with ``team_id`` None)."""
    _providers["registration_stats"] = provider


def registration_stats(start: datetime, team_id: int | None = None) -> RegistrationStats:
    provider = _providers.get("registration_stats")
    if provider is None:
        return RegistrationStats(outcomes={label: {} for label in REGISTRATION_OUTCOMES})
    return provider(start, team_id)


# --- sweeps owned by other apps -------------------------------------------------------------------

# A sweep takes keyword arguments ``now`` and ``batch_size`` and returns an ``inventory.sweeps.SweepResult``.
_sweeps: dict[str, Callable[..., Any]] = {}


def register_sweep(name: str, sweep: Callable[..., Any]) -> None:
    """A sweep a higher app owns (e.g. approvals' lapsed requests), run by ``manage.py sweep <name>``."""
    _sweeps[name] = sweep


def registered_sweeps() -> dict[str, Callable[..., Any]]:
    return dict(_sweeps)


def reset_for_tests() -> dict[str, Any]:
    """Unregister everything; returns the previous registrations for :func:`restore`."""
    global _policy_limits, _renewal_filer, _owner_live_limit
    saved: dict[str, Any] = {"policy": _policy_limits, "renewal": _renewal_filer, "containment": dict(_containment)}
    saved |= {"owner_live_limit": _owner_live_limit, "providers": dict(_providers), "sweeps": dict(_sweeps)}
    _policy_limits = _renewal_filer = _owner_live_limit = None
    _containment.clear()
    _providers.clear()
    _sweeps.clear()
    return saved


def restore(saved: dict[str, Any]) -> None:
    global _policy_limits, _renewal_filer, _owner_live_limit
    _policy_limits, _renewal_filer = saved["policy"], saved["renewal"]
    _owner_live_limit = saved["owner_live_limit"]
    _containment.clear()
    _containment.update(saved["containment"])
    _providers.clear()
    _providers.update(saved["providers"])
    _sweeps.clear()
    _sweeps.update(saved.get("sweeps", {}))
