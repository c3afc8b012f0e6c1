"""Registration policy engine: a pure function from a registration's context to a verdict.

``evaluate(ctx, config)`` decides whether a registration is refused, auto-approved or sent to review, which
scopes it gets and how long it lives. It touches no model, database or setting: the caller loads the
active, versioned ``PolicyConfig`` and builds a ``RegistrationContext`` from the validated client metadata
and what the credential (initial access token, trusted issuer rule or parent client) allows. The verdict
records the policy version and every reason, so an approver or auditor can see why.

Rules (DESIGN.md "Policy"):

- Refused (400) on: unknown scope, wildcard/insecure/fragment redirect URI, scope outside the token's or
  trusted issuer's ceiling, scope outside the parent's scopes, spawn depth over the limit, a parent that has
  spawned ``max_children_per_parent`` children already, owner inactive, owner over quota, shared secret
  where forbidden, a non-internal client on an internal-only credential.
- Tier: high if any scope is high sensitivity or in a high-risk category; medium if any scope is medium,
  or the client is not internal-only, or its auth is not key-based, or it asks for more than
  ``low_max_scopes`` scopes; low otherwise. A spawned child's tier is at least its parent's, so a child
  is never auto-approved where its parent needed review.
- TTL: the requested lifetime (or the default) clamped to the tier ceiling, the credential's ceiling and
  the parent's remaining lifetime; each binding bound adds a reason.
- Client ID Metadata Documents (``via="cimd"``, docs/cimd.md): a document hosted on a domain outside the
  deployment's trusted CIMD domains is medium (``cimd_untrusted_domain``), and so is one with a redirect URI
  off that trusted domain (``cimd_redirect_off_domain``) or on a loopback host (``cimd_loopback_redirect``:
  CIMD cannot stop localhost impersonation). On a trusted domain with every redirect on it, a public client
  (``none`` with PKCE: a document cannot hold a secret) is not counted as ``not_key_based_auth``, so such a
  client with low scopes may auto-approve at the low tier.
- Adopting a shadow client found at the IdP (``adopts_shadow``) is at least medium (``shadow_adoption``):
  people always review it.
- Allowed source networks per tier (``low_allowed_networks`` …, empty: anywhere), a context condition
  (``approvals.conditions``): once the tier is decided, a registration whose address (``source_address``, set
  for RFC 7591 calls only) is outside the tier's networks is refused (``tier_allowed_networks``, 403
  ``access_denied``).
- A working window for human approvals of high-risk requests (``high_approval_window``, e.g.
  ``"Mon-Fri 08:00-18:00 Europe/Berlin"``; empty: the global ``REGISTRAR_HIGH_RISK_APPROVAL_WINDOW``). A token's,
  issuer's or anonymous profile's own window is more specific and wins (``approvals.conditions.applicable_window``).
- Outcome: low -> auto_approve, medium -> review by ``approvals_medium``, high -> review by
  ``approvals_high`` distinct approvers, refused -> refuse.

Reason codes are stable (stored on requests, shown in queues, matched by reports); see ``REASON_CODES``.

Why one module of ~620 lines (the CIMD inputs included): it is one pure function and the vocabulary it reads and writes — the config it
validates, the context it judges, the verdict and every reason code it can emit. Checking that each code in
``REASON_CODES`` is emitted and each config field is read takes one file; split, the rules would drift from
their vocabulary. Nothing here touches the database, so the whole engine is tested without one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from approvals.conditions import address_allowed, networks_problem, window_problem
from approvals.policy_anonymous import ANONYMOUS_CODES, AnonymousRules, anonymous_problems
from inventory.ceilings import DEFAULT_TTL_CEILINGS
from inventory.keys import KEY_BASED_METHODS, SHARED_SECRET_METHODS

TIERS = ("low", "medium", "high")
SENSITIVITIES = TIERS
TIER_RANK = {"low": 0, "medium": 1, "high": 2}
VIAS = frozenset({"token", "software_statement", "spawn", "admin", "pre_registration", "cimd", "anonymous"})
APPLICATION_TYPES = frozenset({"web", "native"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

OUTCOME_AUTO_APPROVE = "auto_approve"
OUTCOME_REVIEW = "review"
OUTCOME_REFUSE = "refuse"
TIER_REFUSED = "refused"

# Every code evaluate() (or redirect_uri_problems) can emit, with its kind:
# "refusal" makes the verdict refused; "risk" raises the tier; "clamp" shortens the lifetime.
REASON_CODES: dict[str, str] = {
    "owner_inactive": "refusal",
    "owner_over_quota": "refusal",
    "unknown_scope": "refusal",
    "scope_above_ceiling": "refusal",
    "scope_above_parent": "refusal",
    "internal_only_required": "refusal",
    "spawn_depth_exceeded": "refusal",
    "spawn_limit_reached": "refusal",
    "parent_context_missing": "refusal",
    "parent_expired": "refusal",
    "shared_secret_forbidden": "refusal",
    "invalid_ttl": "refusal",
    "invalid_ttl_ceiling": "refusal",
    "insecure_redirect_uri": "refusal",
    "wildcard_redirect_uri": "refusal",
    "redirect_uri_fragment": "refusal",
    "malformed_redirect_uri": "refusal",
    "high_sensitivity_scope": "risk",
    "high_risk_category": "risk",
    "medium_sensitivity_scope": "risk",
    "not_internal_only": "risk",
    "not_key_based_auth": "risk",
    "too_many_scopes": "risk",
    "inherited_parent_tier": "risk",
    "cimd_untrusted_domain": "risk",
    "cimd_redirect_off_domain": "risk",
    "cimd_loopback_redirect": "risk",
    "shadow_adoption": "risk",
    "tier_allowed_networks": "refusal",
    "ttl_clamped": "clamp",
    "ttl_clamped_to_ceiling": "clamp",
    "ttl_clamped_to_parent": "clamp",
    **ANONYMOUS_CODES,
}
REDIRECT_CODES = frozenset(
    {
        "insecure_redirect_uri",
        "wildcard_redirect_uri",
        "redirect_uri_fragment",
        "malformed_redirect_uri",
        "anonymous_redirect_not_allowed",
    }
)
# Violations of what a software statement's trusted issuer rule allows (RFC 7591 §3.2.2).
CEILING_CODES = frozenset({"scope_above_ceiling", "internal_only_required"})

_MAX_TTL = 366 * 86400
_CEILING_SOURCE = {
    "token": "the initial access token",
    "software_statement": "the trusted issuer rule",
    "spawn": "the registration credential",
    "admin": "the registration credential",
    "pre_registration": "the pre-registration",
    "cimd": "the pre-registration",
    "anonymous": "the anonymous registration profile",
}


class Reason(NamedTuple):
    """One reason behind a verdict: a stable machine ``code`` and a message naming the values."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    """What the catalogue says about one scope."""

    name: str
    sensitivity: str
    category: str = "other"

    def __post_init__(self) -> None:
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(f"scope {self.name!r}: sensitivity must be one of {', '.join(SENSITIVITIES)}")


def _int_in(name: str, value: Any, low: int, high: int, problems: list[str]) -> None:
    # bool is an int subclass; a True here is always a mistake.
    if type(value) is not int:
        problems.append(f"{name} must be an integer, got {type(value).__name__}")
    elif not low <= value <= high:
        problems.append(f"{name} must be between {low} and {high}, got {value}")


def _str_tuple(name: str, value: Any, problems: list[str]) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{name} must be a list of non-empty strings")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """One version of the policy thresholds. Validated on construction; raises ValueError."""

    version: int
    low_ttl_seconds: int = DEFAULT_TTL_CEILINGS["low"]
    medium_ttl_seconds: int = DEFAULT_TTL_CEILINGS["medium"]
    high_ttl_seconds: int = DEFAULT_TTL_CEILINGS["high"]
    low_max_scopes: int = 3
    max_spawn_depth: int = 3
    # Children one parent's registration access token may spawn in its life (accepted or pending ones count;
    # refused attempts do not). 0 forbids spawning.
    max_children_per_parent: int = 10
    max_live_clients_per_owner: int = 50
    allow_shared_secret: bool = False
    approvals_medium: int = 1
    approvals_high: int = 2
    default_ttl_seconds: int = 3600
    high_categories: tuple[str, ...] = ("source_control", "production_data", "identity_admin")
    key_based_methods: tuple[str, ...] = tuple(sorted(KEY_BASED_METHODS))
    # A software statement (RFC 7591 §2.3) may live at most this long: exp - iat, and exp - now.
    max_statement_lifetime_seconds: int = 3600
    # Context condition per tier (approvals.conditions): CIDR blocks a registration of that tier must come from.
    low_allowed_networks: tuple[str, ...] = ()
    medium_allowed_networks: tuple[str, ...] = ()
    high_allowed_networks: tuple[str, ...] = ()
    # Working window for human approvals of high-risk requests (approvals.conditions); empty: the global setting.
    high_approval_window: str = ""

    def __post_init__(self) -> None:
        problems: list[str] = []
        _int_in("version", self.version, 1, 2**31 - 1, problems)
        for name in ("low_ttl_seconds", "medium_ttl_seconds", "high_ttl_seconds", "default_ttl_seconds"):
            _int_in(name, getattr(self, name), 1, _MAX_TTL, problems)
        _int_in("max_statement_lifetime_seconds", self.max_statement_lifetime_seconds, 60, 86400, problems)
        _int_in("low_max_scopes", self.low_max_scopes, 0, 1000, problems)
        _int_in("max_spawn_depth", self.max_spawn_depth, 0, 100, problems)
        _int_in("max_children_per_parent", self.max_children_per_parent, 0, 100_000, problems)
        # 0 is allowed: an admin's kill switch that stops every new registration.
        _int_in("max_live_clients_per_owner", self.max_live_clients_per_owner, 0, 10**9, problems)
        _int_in("approvals_medium", self.approvals_medium, 1, 10, problems)
        _int_in("approvals_high", self.approvals_high, 1, 10, problems)
        if (
            type(self.approvals_medium) is int
            and type(self.approvals_high) is int
            and self.approvals_high < self.approvals_medium
        ):
            problems.append("approvals_high must be at least approvals_medium")
        if type(self.allow_shared_secret) is not bool:
            problems.append("allow_shared_secret must be true or false")
        _str_tuple("high_categories", self.high_categories, problems)
        _str_tuple("key_based_methods", self.key_based_methods, problems)
        if isinstance(self.key_based_methods, tuple):
            # Counting a shared secret as key-based would quietly let it auto-approve.
            not_keys = sorted(set(self.key_based_methods) & (SHARED_SECRET_METHODS | {"none"}))
            if not_keys:
                problems.append(f"key_based_methods must not include {', '.join(not_keys)}")
        for tier in TIERS:
            problem = networks_problem(getattr(self, f"{tier}_allowed_networks"))
            if problem is not None:
                problems.append(f"{tier}_allowed_networks: {problem}")
        window_problem_text = window_problem(self.high_approval_window)
        if window_problem_text is not None:
            problems.append(f"high_approval_window: {window_problem_text}")
        if problems:
            raise ValueError("invalid policy config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], version: int) -> PolicyConfig:
        """Build from stored thresholds; unknown keys (and any ``version`` key) are ignored."""
        if not isinstance(data, Mapping):
            # ValueError like every other bad-config case, so callers catch one type.
            raise ValueError("invalid policy config: thresholds must be a mapping")  # noqa: TRY004
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "version" or f.name not in data:
                continue
            value = data[f.name]
            if isinstance(f.default, tuple) and isinstance(value, list):
                value = tuple(v.strip() if isinstance(v, str) and f.name.endswith("_networks") else v for v in value)
            kwargs[f.name] = value
        return cls(version=version, **kwargs)

    @property
    def ttl_ceilings(self) -> dict[str, int]:
        """Seconds a client of each tier may live per approval or renewal under this policy version."""
        return {"low": self.low_ttl_seconds, "medium": self.medium_ttl_seconds, "high": self.high_ttl_seconds}

    def allowed_networks(self, tier: str) -> tuple[str, ...]:
        """The CIDR blocks registrations of ``tier`` must come from (empty: anywhere)."""
        return {
            "low": self.low_allowed_networks,
            "medium": self.medium_allowed_networks,
            "high": self.high_allowed_networks,
        }.get(tier, ())

    def ttl_ceiling(self, risk_tier: str) -> int:
        """The ceiling of ``risk_tier``; an unknown tier gets the strictest one (as ``inventory.ceilings``)."""
        ceilings = self.ttl_ceilings
        return ceilings.get(str(risk_tier), min(ceilings.values()))

    def to_dict(self) -> dict[str, Any]:
        """The thresholds as JSON-ready data (without ``version``, which is stored alongside)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name != "version":
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


DEFAULT_THRESHOLDS: dict[str, Any] = PolicyConfig(version=1).to_dict()


@dataclass(frozen=True, slots=True)
class RegistrationContext:
    """Everything the policy needs to know about one registration attempt."""

    requested_scopes: tuple[str, ...]
    catalogue: Mapping[str, ScopeInfo]
    requested_ttl: int | None
    redirect_uris: tuple[str, ...]
    application_type: str
    token_endpoint_auth_method: str
    internal_only: bool
    owner_active: bool
    owner_live_clients: int
    via: str
    ceiling_scopes: frozenset[str] | None = None
    ceiling_ttl: int | None = None
    ceiling_internal_only: bool = False
    parent_scopes: frozenset[str] | None = None
    parent_remaining_ttl: int | None = None
    parent_depth: int | None = None
    parent_tier: str | None = None
    parent_children: int | None = None  # children the parent has spawned so far
    # A CIMD client: the client_id URL's host, and the trusted domain covering it (None if untrusted).
    cimd_host: str | None = None
    cimd_trusted_domain: str | None = None
    cimd_trusted_subdomains: bool = True
    # An anonymous registration (approvals.policy_anonymous): the profile's rules, the metadata they judge, and
    # the profile's live-client limit, which replaces the per-owner one (its clients share one owner).
    anonymous: AnonymousRules | None = None
    grant_types: tuple[str, ...] = ()
    response_types: tuple[str, ...] = ()
    owner_live_limit: int | None = None
    # Adopting a shadow client found at the IdP (approvals.preregistration): always reviewed by people.
    adopts_shadow: bool = False
    # The requester's real address (approvals.conditions.source_address) on an RFC 7591 call, for the tier's
    # allowed networks; None where no network condition applies (pre-registration by a signed-in person, seeding).
    source_address: str | None = None

    def __post_init__(self) -> None:
        # Programming errors, not policy outcomes: the API validates these before building a context.
        if self.via not in VIAS:
            raise ValueError(f"via must be one of {', '.join(sorted(VIAS))}, got {self.via!r}")
        if self.application_type not in APPLICATION_TYPES:
            raise ValueError(f"application_type must be web or native, got {self.application_type!r}")
        if self.parent_tier is not None and self.parent_tier not in TIER_RANK:
            raise ValueError(f"parent_tier must be one of {', '.join(TIERS)}, got {self.parent_tier!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's decision, stored on the registration request."""

    policy_version: int
    tier: str
    outcome: str
    reasons: tuple[Reason, ...]
    granted_scopes: tuple[str, ...]
    ttl_seconds: int
    approvals_needed: int
    error: str | None = None

    @property
    def refused(self) -> bool:
        return self.outcome == OUTCOME_REFUSE

    @property
    def error_description(self) -> str:
        """Every reason's message, for an RFC 7591 ``error_description`` or a queue row."""
        return "; ".join(r.message for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "tier": self.tier,
            "outcome": self.outcome,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "granted_scopes": list(self.granted_scopes),
            "ttl_seconds": self.ttl_seconds,
            "approvals_needed": self.approvals_needed,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            policy_version=data["policy_version"],
            tier=data["tier"],
            outcome=data["outcome"],
            reasons=tuple(Reason(r["code"], r["message"]) for r in data["reasons"]),
            granted_scopes=tuple(data["granted_scopes"]),
            ttl_seconds=data["ttl_seconds"],
            approvals_needed=data["approvals_needed"],
            error=data.get("error"),
        )


def _duration(seconds: int) -> str:
    """Seconds with a human form alongside, e.g. ``604800s (7d)``."""
    if seconds <= 0 or seconds % 60:
        return f"{seconds}s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds}s ({seconds // size}{unit})"
    return f"{seconds}s"  # pragma: no cover - every multiple of 60 matched above


def _short(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def redirect_uri_problems(uri: str, application_type: str) -> list[Reason]:
    """Why a redirect URI is unacceptable: empty list if it is fine.

    https only, except plain http on a loopback host (127.0.0.1, [::1], localhost) for native apps
    (RFC 8252 §7.3); no ``*`` anywhere, no fragment (RFC 6749 §3.1.2). Exact URIs only: the IdP compares
    them byte for byte, so a wildcard would be a hole, not a convenience.
    """
    problems: list[Reason] = []
    shown = _short(uri)
    if "*" in uri:
        problems.append(
            Reason("wildcard_redirect_uri", f"redirect URI {shown} contains a wildcard '*'; register exact URIs")
        )
    if "#" in uri:
        problems.append(
            Reason("redirect_uri_fragment", f"redirect URI {shown} contains a fragment ('#'), which is not allowed")
        )
    if not uri or " " in uri or not uri.isprintable():
        problems.append(
            Reason("malformed_redirect_uri", f"redirect URI {shown} is empty or contains spaces or control characters")
        )
        return problems
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        problems.append(Reason("malformed_redirect_uri", f"redirect URI {shown} is not a valid URI"))
        return problems
    scheme = parts.scheme
    if scheme == "https":
        if not host:
            problems.append(Reason("malformed_redirect_uri", f"redirect URI {shown} has no host"))
    elif scheme == "http" and application_type == "native" and host in LOOPBACK_HOSTS:
        pass
    elif scheme == "http":
        where = (
            "native apps may use http only on 127.0.0.1, [::1] or localhost"
            if application_type == "native"
            else "plain http is allowed only for native apps on a loopback host"
        )
        problems.append(Reason("insecure_redirect_uri", f"redirect URI {shown} uses http; use https ({where})"))
    else:
        problems.append(
            Reason(
                "insecure_redirect_uri",
                f"redirect URI {shown} uses scheme {scheme or '(none)'!r}; only https is allowed "
                "(and http on loopback for native apps)",
            )
        )
    return problems


def domain_covers(domain: str, host: str, *, include_subdomains: bool = True) -> bool:
    """Whether ``host`` is ``domain`` (or, with ``include_subdomains``, a name under it); case-insensitive."""
    domain, host = domain.lower().rstrip("."), host.lower().rstrip(".")
    return bool(domain) and (host == domain or (include_subdomains and host.endswith("." + domain)))


def _cimd_risks(ctx: RegistrationContext) -> tuple[list[Reason], bool]:
    """The CIMD signals, and whether the document is on a trusted domain with every redirect on it."""
    risks: list[Reason] = []
    domain = ctx.cimd_trusted_domain
    if domain is None:
        risks.append(
            Reason(
                "cimd_untrusted_domain",
                f"the client metadata document is hosted on {ctx.cimd_host}, which is not a trusted CIMD domain",
            )
        )
    for uri in ctx.redirect_uris:
        try:
            host = urlsplit(uri).hostname or ""
        except ValueError:
            continue
        if host in LOOPBACK_HOSTS:
            risks.append(
                Reason(
                    "cimd_loopback_redirect",
                    f"redirect URI {_short(uri)} is on a loopback host: any program on the user's machine could "
                    "act as this client (CIMD cannot prevent localhost impersonation)",
                )
            )
        elif domain is not None and not domain_covers(domain, host, include_subdomains=ctx.cimd_trusted_subdomains):
            risks.append(
                Reason(
                    "cimd_redirect_off_domain",
                    f"redirect URI {_short(uri)} is on {host}, outside the trusted domain {domain}",
                )
            )
    return risks, domain is not None and not risks


def _refusal_error(via: str, refusals: list[Reason]) -> str:
    """Pick the one RFC 7591 error code for a refusal with possibly many reasons."""
    if any(r.code == "tier_allowed_networks" for r in refusals):
        return "access_denied"  # a context condition, as on tokens, issuers and profiles (approvals.conditions)
    if via == "software_statement" and any(r.code in CEILING_CODES for r in refusals):
        return "unapproved_software_statement"
    if all(r.code in REDIRECT_CODES for r in refusals):
        return "invalid_redirect_uri"
    return "invalid_client_metadata"


def evaluate(ctx: RegistrationContext, config: PolicyConfig) -> Verdict:
    """Decide tier, outcome, scopes and lifetime of one registration. Pure and fast (a few µs)."""
    refusals: list[Reason] = []
    risks: list[Reason] = []

    if not ctx.owner_active:
        refusals.append(Reason("owner_inactive", "the owner is not active; a sponsor must take over first"))
    owner_limit = config.max_live_clients_per_owner if ctx.owner_live_limit is None else ctx.owner_live_limit
    if ctx.owner_live_clients >= owner_limit:
        refusals.append(
            Reason(
                "owner_over_quota",
                f"the owner already has {ctx.owner_live_clients} live clients; the limit is {owner_limit}"
                + (" (the anonymous profile's max live clients)" if ctx.owner_live_limit is not None else ""),
            )
        )

    # Scopes: one pass for refusals and risk. Duplicates collapse, order is kept.
    granted = tuple(dict.fromkeys(ctx.requested_scopes))
    catalogue = ctx.catalogue
    ceiling = ctx.ceiling_scopes
    parent_scopes = ctx.parent_scopes
    high_categories = config.high_categories
    rank = 0
    for name in granted:
        info = catalogue.get(name)
        if info is None:
            refusals.append(Reason("unknown_scope", f"scope {name!r} is not in the scope catalogue"))
        elif info.sensitivity == "high":
            rank = 2
            risks.append(Reason("high_sensitivity_scope", f"scope {name!r} has high sensitivity"))
        elif info.category in high_categories:
            rank = 2
            risks.append(Reason("high_risk_category", f"scope {name!r} is in the high-risk category {info.category!r}"))
        elif info.sensitivity == "medium":
            rank = max(rank, 1)
            risks.append(Reason("medium_sensitivity_scope", f"scope {name!r} has medium sensitivity"))
        if ceiling is not None and name not in ceiling:
            refusals.append(
                Reason("scope_above_ceiling", f"scope {name!r} is not allowed by {_CEILING_SOURCE[ctx.via]}")
            )
        if parent_scopes is not None and name not in parent_scopes:
            refusals.append(Reason("scope_above_parent", f"scope {name!r} is not held by the parent client"))

    if ctx.ceiling_internal_only and not ctx.internal_only:
        refusals.append(
            Reason(
                "internal_only_required",
                f"{_CEILING_SOURCE[ctx.via]} allows only internal-only clients; set internal_only to true",
            )
        )

    # Spawning: the child stays inside its parent in depth, scopes and lifetime.
    if ctx.via == "spawn" and (
        parent_scopes is None or ctx.parent_remaining_ttl is None or ctx.parent_depth is None or ctx.parent_tier is None
    ):
        refusals.append(
            Reason("parent_context_missing", "a spawned client needs its parent's scopes, lifetime and depth")
        )
    if ctx.parent_depth is not None and ctx.parent_depth + 1 > config.max_spawn_depth:
        refusals.append(
            Reason(
                "spawn_depth_exceeded",
                f"a child of this parent would be at depth {ctx.parent_depth + 1}; "
                f"the limit is {config.max_spawn_depth}",
            )
        )
    if ctx.parent_children is not None and ctx.parent_children >= config.max_children_per_parent:
        refusals.append(
            Reason(
                "spawn_limit_reached",
                f"the parent client has already spawned {ctx.parent_children} children; "
                f"the limit is {config.max_children_per_parent} (policy max_children_per_parent)",
            )
        )
    if ctx.parent_remaining_ttl is not None and ctx.parent_remaining_ttl <= 0:
        refusals.append(Reason("parent_expired", "the parent client has no lifetime left"))

    method = ctx.token_endpoint_auth_method
    if method in SHARED_SECRET_METHODS and not config.allow_shared_secret:
        refusals.append(
            Reason(
                "shared_secret_forbidden",
                f"token_endpoint_auth_method {method!r} uses a shared secret, which this policy forbids; "
                "use private_key_jwt or mutual TLS",
            )
        )

    requested_ttl = ctx.requested_ttl
    if requested_ttl is not None and (type(requested_ttl) is not int or requested_ttl <= 0):
        refusals.append(Reason("invalid_ttl", f"requested TTL {requested_ttl!r} must be a positive number of seconds"))
    if ctx.ceiling_ttl is not None and ctx.ceiling_ttl <= 0:
        refusals.append(Reason("invalid_ttl_ceiling", f"{_CEILING_SOURCE[ctx.via]} allows no lifetime"))

    for uri in ctx.redirect_uris:
        refusals.extend(redirect_uri_problems(uri, ctx.application_type))
    if ctx.anonymous is not None:
        problems = anonymous_problems(
            ctx.anonymous,
            token_endpoint_auth_method=method,
            grant_types=ctx.grant_types,
            response_types=ctx.response_types,
            redirect_uris=ctx.redirect_uris,
            application_type=ctx.application_type,
        )
        refusals.extend(Reason(code, message) for code, message in problems)

    if refusals:
        return Verdict(
            policy_version=config.version,
            tier=TIER_REFUSED,
            outcome=OUTCOME_REFUSE,
            reasons=tuple(refusals),
            granted_scopes=(),
            ttl_seconds=0,
            approvals_needed=0,
            error=_refusal_error(ctx.via, refusals),
        )

    # Medium-risk signals are listed even when a high scope already decided the tier: the reviewer sees all.
    if not ctx.internal_only:
        rank = max(rank, 1)
        risks.append(Reason("not_internal_only", "the client is not internal-only"))
    cimd_on_trusted_domain = False
    if ctx.cimd_host is not None:
        cimd_risks, cimd_on_trusted_domain = _cimd_risks(ctx)
        if cimd_risks:
            rank = max(rank, 1)
            risks.extend(cimd_risks)
    if ctx.adopts_shadow:
        rank = max(rank, 1)
        risks.append(
            Reason("shadow_adoption", "adopts a client found at the IdP that nobody approved here; people review it")
        )
    # A public client admitted by an anonymous profile passed the admin's rules for exactly that shape of
    # software (the refusals above), like a CIMD document on a trusted domain: ``none`` is not a risk signal.
    vetted_public = (cimd_on_trusted_domain or ctx.anonymous is not None) and method == "none"
    if method not in config.key_based_methods and not vetted_public:
        rank = max(rank, 1)
        risks.append(Reason("not_key_based_auth", f"token_endpoint_auth_method {method!r} is not key-based"))
    if len(granted) > config.low_max_scopes:
        rank = max(rank, 1)
        risks.append(
            Reason(
                "too_many_scopes",
                f"{len(granted)} scopes requested; more than {config.low_max_scopes} needs review",
            )
        )
    parent_tier = ctx.parent_tier
    if parent_tier is not None and TIER_RANK[parent_tier] > rank:
        rank = TIER_RANK[parent_tier]
        risks.append(
            Reason("inherited_parent_tier", f"the parent client is {parent_tier} tier; a child is never lower")
        )
    tier = TIERS[rank]

    networks = config.allowed_networks(tier)
    if networks and ctx.source_address is not None and not address_allowed(ctx.source_address, networks):
        refused = Reason(
            "tier_allowed_networks",
            f"condition allowed_networks of the {tier} tier (policy v{config.version}): {tier}-tier registrations "
            f"must come from {', '.join(networks)}; this one came from {ctx.source_address or 'an unknown address'}",
        )
        return Verdict(
            policy_version=config.version,
            tier=TIER_REFUSED,
            outcome=OUTCOME_REFUSE,
            reasons=(refused, *risks),
            granted_scopes=(),
            ttl_seconds=0,
            approvals_needed=0,
            error=_refusal_error(ctx.via, [refused]),
        )

    # Lifetime: more blast radius means shorter life, never longer.
    ttl = requested_ttl if requested_ttl is not None else config.default_ttl_seconds
    wanted = ttl
    label = "requested TTL" if requested_ttl is not None else "default TTL"
    clamps: list[Reason] = []
    tier_ceiling = config.ttl_ceiling(tier)
    if tier_ceiling < wanted:
        clamps.append(
            Reason(
                "ttl_clamped", f"{label} {_duration(wanted)} exceeds the {tier}-tier ceiling {_duration(tier_ceiling)}"
            )
        )
        ttl = tier_ceiling
    if ctx.ceiling_ttl is not None and ctx.ceiling_ttl < wanted:
        clamps.append(
            Reason(
                "ttl_clamped_to_ceiling",
                f"{label} {_duration(wanted)} exceeds {_CEILING_SOURCE[ctx.via]}'s maximum {_duration(ctx.ceiling_ttl)}",
            )
        )
        ttl = min(ttl, ctx.ceiling_ttl)
    if ctx.parent_remaining_ttl is not None and ctx.parent_remaining_ttl < wanted:
        clamps.append(
            Reason(
                "ttl_clamped_to_parent",
                f"{label} {_duration(wanted)} exceeds the parent's remaining lifetime "
                f"{_duration(ctx.parent_remaining_ttl)}",
            )
        )
        ttl = min(ttl, ctx.parent_remaining_ttl)

    if rank == 0:
        outcome, approvals = OUTCOME_AUTO_APPROVE, 0
    elif rank == 1:
        outcome, approvals = OUTCOME_REVIEW, config.approvals_medium
    else:
        outcome, approvals = OUTCOME_REVIEW, config.approvals_high
    return Verdict(
        policy_version=config.version,
        tier=tier,
        outcome=outcome,
        reasons=tuple(risks + clamps),
        granted_scopes=granted,
        ttl_seconds=ttl,
        approvals_needed=approvals,
        error=None,
    )
