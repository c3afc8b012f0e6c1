"""Intake and decisions: tokens, trusted issuers, policy versions, requests and decisions.

Over 400 lines on purpose: an app's models stay in one module (Django's convention, and what migrations and admin
expect to find), here with the request counts' tables (``approvals.counts``); the behaviour lives in services,
selectors and the policy modules, not here."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from approvals.choices import DecisionKind, IssuerKind, PolicyOutcome, RequestKind, RequestState
from approvals.conditions import validate_networks, validate_window
from approvals.querysets import RegistrationRequestQuerySet, tier_rank
from inventory.choices import CreatedVia, RiskTier


# The context conditions (approvals.conditions) a token, a trusted issuer and an anonymous profile each carry: one
# definition of each field.
def allowed_networks_field() -> models.JSONField:
    return models.JSONField(
        _("allowed source networks (CIDR)"), default=list, blank=True, validators=[validate_networks]
    )


def approval_window_field() -> models.CharField:
    return models.CharField(
        _("working window for high-risk approvals"),
        max_length=100,
        blank=True,
        default="",
        validators=[validate_window],
        help_text=_("e.g. Mon-Fri 08:00-18:00 Europe/Berlin; empty: the policy's or the global window"),
    )


class Policy(models.Model):
    """A version of the policy thresholds. Editing creates a new version; verdicts record theirs."""

    version = models.PositiveIntegerField(_("version"), unique=True)
    thresholds = models.JSONField(_("thresholds"), default=dict)
    is_active = models.BooleanField(_("active"), default=False)
    note = models.CharField(_("change note"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("policy version")
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="policy_one_active"),
        ]

    def __str__(self) -> str:
        return f"policy v{self.version}"


class InitialAccessToken(models.Model):
    """RFC 7591 §3 initial access token, minted by an owner for one purpose. Stored hashed; shown once."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.PROTECT, related_name="access_tokens"
    )
    team = models.ForeignKey(
        "inventory.Team", verbose_name=_("team"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purpose = models.TextField(_("purpose"))
    prefix = models.CharField(_("prefix"), max_length=16, db_index=True)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True)
    allowed_scopes = models.JSONField(_("allowed scopes"), default=list)
    max_ttl_seconds = models.PositiveIntegerField(_("max client TTL (s)"))
    max_uses = models.PositiveIntegerField(_("max uses"), default=1)
    uses = models.PositiveIntegerField(_("uses"), default=0)
    internal_only = models.BooleanField(_("internal only"), default=False)
    # Context condition (approvals.conditions): registrations with this token only from these CIDR blocks.
    allowed_networks = allowed_networks_field()
    # Context condition (approvals.conditions): human approvals of its high-risk requests only in this window.
    approval_window = approval_window_field()
    idp = models.ForeignKey(
        "inventory.IdPConnection",
        verbose_name=_("target IdP"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    expires_at = models.DateTimeField(_("expires at"))
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)

    class Meta:
        verbose_name = _("initial access token")
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(uses__lte=models.F("max_uses")), name="iat_uses_bounded")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.purpose[:40]})"


class TrustedIssuer(models.Model):
    """A workload identity issuer whose software statements Registrar accepts (RFC 7591 §2.3).

    ``subject`` matches the statement's ``sub`` (OIDC) or SPIFFE ID exactly, or as a prefix when it
    ends with ``*``. The rule maps matching workloads to an owner, purpose and scope ceiling.
    """

    name = models.CharField(_("name"), max_length=128)
    kind = models.CharField(_("kind"), max_length=16, choices=IssuerKind.choices, default=IssuerKind.OIDC)
    issuer = models.CharField(_("issuer (iss) or SPIFFE trust domain"), max_length=512)
    audience = models.CharField(_("expected audience"), max_length=512)
    jwks = models.JSONField(_("issuer JWKS"), default=dict)
    subject = models.CharField(_("subject / SPIFFE ID rule"), max_length=512)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.PROTECT, related_name="trusted_issuers"
    )
    team = models.ForeignKey(
        "inventory.Team", verbose_name=_("team"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purpose = models.TextField(_("purpose"))
    allowed_scopes = models.JSONField(_("allowed scopes"), default=list)
    max_ttl_seconds = models.PositiveIntegerField(_("max client TTL (s)"), default=86400)
    internal_only = models.BooleanField(_("internal only"), default=True)
    # Context condition (approvals.conditions): statements of this issuer accepted only from these CIDR blocks.
    allowed_networks = allowed_networks_field()
    # Context condition (approvals.conditions): human approvals of its high-risk requests only in this window.
    approval_window = approval_window_field()
    idp = models.ForeignKey(
        "inventory.IdPConnection",
        verbose_name=_("target IdP"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("trusted issuer")
        indexes = [models.Index(fields=["issuer", "enabled"], name="issuer_lookup_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.issuer})"


class TrustedCimdDomain(models.Model):
    """A domain whose Client ID Metadata Documents the policy trusts (docs/cimd.md): a document hosted there,
    with every redirect URI there too, may auto-approve at the low tier; any other goes to review. Edited by
    admins in the Django admin, every change audited."""

    domain = models.CharField(
        _("domain"), max_length=253, help_text=_("A DNS name such as example.com (lower case, no scheme or port).")
    )
    include_subdomains = models.BooleanField(
        _("include subdomains"), default=False, help_text=_("Also trust every name under this domain.")
    )
    note = models.CharField(_("why it is trusted"), max_length=255, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("trusted CIMD domain")
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(fields=["domain"], name="trusted_cimd_domain_unique"),
            models.CheckConstraint(condition=Q(domain=Lower("domain")), name="trusted_cimd_domain_lower"),
        ]

    def __str__(self) -> str:
        return f"{'*.' if self.include_subdomains else ''}{self.domain}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from approvals.cimd.domains import domain_problem

        self.domain = (self.domain or "").strip().lower().rstrip(".")
        problem = domain_problem(self.domain)
        if problem:
            raise ValidationError({"domain": problem})


class AnonymousProfile(models.Model):
    """Who may register WITHOUT a credential at one IdP connection, and what they may ask for (docs/mcp.md).

    Off by default: an admin creates and enables it (audited, ``approvals.admin``). Anonymous clients belong to
    the profile's owner and team — the people who answer for them — and the policy judges each registration
    like any other (``approvals.policy``, via ``anonymous``), with this profile's rules as its ceiling.
    """

    idp = models.OneToOneField(
        "inventory.IdPConnection", verbose_name=_("IdP connection"), on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(_("name"), max_length=128)
    enabled = models.BooleanField(_("enabled"), default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner (answers for anonymous clients)"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    team = models.ForeignKey("inventory.Team", verbose_name=_("owner team"), on_delete=models.PROTECT, related_name="+")
    purpose = models.TextField(_("purpose given to its clients"), default="Anonymous MCP client (dynamic registration)")
    allowed_scopes = models.JSONField(_("allowed scopes (low sensitivity)"), default=list, blank=True)
    allow_loopback = models.BooleanField(_("loopback redirect URIs allowed"), default=True)
    redirect_domains = models.JSONField(_("redirect URI domains allowed"), default=list, blank=True)
    application_types = models.JSONField(_("application types allowed"), default=list, blank=True)
    max_ttl_seconds = models.PositiveIntegerField(_("max client TTL (s)"), default=7 * 86400)
    internal_only = models.BooleanField(_("clients are internal-only"), default=True)
    max_live_clients = models.PositiveIntegerField(_("max live clients"), default=1000)
    coalesce = models.BooleanField(_("coalesce identical registrations"), default=True)
    coalesce_window_seconds = models.PositiveIntegerField(_("coalescing window (s)"), default=86400)
    rate_per_software = models.CharField(_("rate per software identity"), max_length=32, default="30/m", blank=True)
    rate_per_profile = models.CharField(_("rate for the whole profile"), max_length=32, default="600/m", blank=True)
    # Context condition (approvals.conditions): anonymous registrations, and their RFC 7592 calls, only from these.
    allowed_networks = allowed_networks_field()
    # Context condition (approvals.conditions): human approvals of its high-risk requests only in this window.
    approval_window = approval_window_field()
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("anonymous registration profile")

    def __str__(self) -> str:
        return f"{self.name} ({'on' if self.enabled else 'off'})"


class SoftwareStatementUse(models.Model):
    """A software statement's ``jti``, used once by an accepted or pending registration (RFC 7591 §2.3).

    The unique constraint is the promise that a statement registers once, whatever the concurrency: the row is
    written in the same database statement as the registration (``approvals.oauth2.credential_use``). Rows whose statement has
    expired are purged (``approvals.statements.statement_uses_purge``).
    """

    issuer = models.CharField(_("issuer (iss) or SPIFFE trust domain"), max_length=512)
    jti = models.CharField(_("statement id (jti)"), max_length=255)
    expires_at = models.DateTimeField(_("statement expires at"))
    registration_id = models.CharField(_("used by registration"), max_length=40)
    used_at = models.DateTimeField(_("used at"))

    class Meta:
        verbose_name = _("software statement use")
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="statement_jti_used_once")]
        indexes = [models.Index(fields=["expires_at"], name="statement_use_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.issuer} jti={self.jti}"


class RegistrationRequest(models.Model):
    """What an agent asked for, the verdict the policy gave, and where it went from there."""

    public_id = models.CharField(_("registration id"), max_length=40)  # unique: see Meta.constraints
    kind = models.CharField(_("kind"), max_length=16, choices=RequestKind.choices, default=RequestKind.REGISTRATION)
    state = models.CharField(_("state"), max_length=16, choices=RequestState.choices, default=RequestState.PENDING)
    via = models.CharField(_("requested via"), max_length=24, choices=CreatedVia.choices)
    metadata = models.JSONField(_("submitted metadata"), default=dict)
    client_name = models.CharField(_("client name"), max_length=200, blank=True)
    software_id = models.CharField(_("software id"), max_length=255, blank=True)
    purpose = models.TextField(_("purpose"), blank=True)
    requested_scopes = models.JSONField(_("requested scopes"), default=list)
    requested_ttl = models.PositiveIntegerField(_("requested TTL (s)"), null=True, blank=True)
    granted_scopes = models.JSONField(_("granted scopes"), default=list)
    granted_ttl = models.PositiveIntegerField(_("granted TTL (s)"), null=True, blank=True)
    audiences = models.JSONField(_("service boundary"), default=list)
    internal_only = models.BooleanField(_("internal only"), default=False)
    # The key set Registrar fetched from the metadata's jwks_uri and validated: the keys the client is given.
    fetched_jwks = models.JSONField(_("keys fetched from jwks_uri"), null=True, blank=True)
    idp = models.ForeignKey(
        "inventory.IdPConnection",
        verbose_name=_("target IdP"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # owner and token: indexed by request_owner_state_idx / request_token_idx (no second single-column index)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="registration_requests",
        db_index=False,
    )
    team = models.ForeignKey(
        "inventory.Team", verbose_name=_("team"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token = models.ForeignKey(
        InitialAccessToken,
        verbose_name=_("initial access token"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="requests",
        db_index=False,
    )
    issuer = models.ForeignKey(
        TrustedIssuer,
        verbose_name=_("software statement issuer"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="requests",
    )
    statement_subject = models.CharField(_("software statement subject"), max_length=512, blank=True)
    # Pre-registration (docs/cimd.md): who submitted it, when that is not the owner's own agent. They cannot
    # approve it (separation of duties), whatever their role.
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("submitted by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    # A Client ID Metadata Document: its URL (the client_id), the SHA-256 of the body reviewed, and the body.
    # db_default: rows written by raw SQL (seed_scale's COPY, portal.rawsql) that do not name these columns
    cimd_url = models.CharField(
        _("client metadata document URL"), max_length=2000, blank=True, default="", db_default=""
    )
    cimd_sha256 = models.CharField(_("document SHA-256"), max_length=64, blank=True, default="", db_default="")
    cimd_document = models.JSONField(_("client metadata document"), null=True, blank=True)
    parent_client = models.ForeignKey(
        "inventory.Client",
        verbose_name=_("parent client"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="spawn_requests",
    )
    client = models.ForeignKey(
        "inventory.Client",
        verbose_name=_("client"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="requests",
    )
    registration_access_token_hash = models.CharField(
        _("registration access token hash"), max_length=64, null=True, blank=True
    )  # unique: see Meta.constraints
    # RFC 7592 rotation with a grace (approvals.oauth2.rat): the token last used keeps working until its successor
    # is first used or the grace ends; tokens used (or superseded) before are kept to recognise a reuse.
    rat_previous_hash = models.CharField(
        _("previous registration access token hash"), max_length=64, blank=True, default="", db_default=""
    )
    rat_previous_until = models.DateTimeField(_("previous token valid until"), null=True, blank=True)
    rat_spent_hashes = models.JSONField(_("spent registration access token hashes"), null=True, blank=True)
    # Anonymous registrations (docs/mcp.md): the profile, the software's identity (a hash of software_id, else
    # client name + redirect URIs + auth method + key thumbprints) and the key of what is identical in effect.
    profile = models.ForeignKey(
        AnonymousProfile,
        verbose_name=_("anonymous profile"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    software_identity = models.CharField(_("software identity"), max_length=64, blank=True, default="", db_default="")
    coalesce_key = models.CharField(_("coalescing key"), max_length=64, blank=True, default="", db_default="")
    coalesced_count = models.PositiveIntegerField(_("registrations coalesced into it"), default=0, db_default=0)
    last_coalesced_at = models.DateTimeField(_("last coalesced at"), null=True, blank=True)
    policy_version = models.PositiveIntegerField(_("policy version"), null=True, blank=True)
    risk_tier = models.CharField(
        _("risk tier"), max_length=8, blank=True, choices=[*RiskTier.choices, ("refused", _("Refused"))]
    )
    outcome = models.CharField(_("policy outcome"), max_length=16, choices=PolicyOutcome.choices, blank=True)
    reasons = models.JSONField(_("policy reasons"), default=list)
    verdict = models.JSONField(_("verdict"), default=dict)
    approvals_needed = models.PositiveSmallIntegerField(_("approvals needed"), default=0)
    error = models.CharField(_("error code"), max_length=64, blank=True)
    source_ip = models.GenericIPAddressField(_("source address"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    decision_reason = models.TextField(_("decision reason"), blank=True)

    objects = RegistrationRequestQuerySet.as_manager()

    class Meta:
        verbose_name = _("registration request")
        indexes = [
            models.Index(fields=["state", "created_at"], name="request_state_age_idx"),
            models.Index(fields=["owner", "state"], name="request_owner_state_idx"),
            models.Index(fields=["token"], name="request_token_idx"),
            # The review queue's ORDER BY (tier desc, age) over pending rows: first page without a sort.
            models.Index(
                tier_rank().desc(),
                models.F("created_at"),
                models.F("id"),
                condition=Q(state="pending"),
                name="request_queue_order_idx",
            ),
            models.Index(fields=["coalesce_key"], condition=~Q(coalesce_key=""), name="request_coalesce_idx"),
            models.Index(fields=["software_identity"], condition=~Q(software_identity=""), name="request_software_idx"),
        ]
        # Unique constraints rather than unique=True: on PostgreSQL a unique CharField also gets a second,
        # varchar_pattern_ops index for LIKE, which nothing here uses and every registration would maintain.
        constraints = [
            models.CheckConstraint(condition=Q(state__in=RequestState.values), name="request_state_valid"),
            models.UniqueConstraint(fields=["public_id"], name="request_public_id_unique"),
            models.UniqueConstraint(fields=["registration_access_token_hash"], name="request_rat_hash_unique"),
            # At most one renewal of a client waits for review (inventory.lifecycle._file_renewal_request).
            models.UniqueConstraint(
                fields=["client"],
                condition=Q(kind=RequestKind.RENEWAL, state=RequestState.PENDING),
                name="request_one_pending_renewal",
            ),
            # At most one change of a client's metadata document waits for review (approvals.cimd.pinning).
            models.UniqueConstraint(
                fields=["client"],
                condition=Q(kind=RequestKind.CIMD_CHANGE, state=RequestState.PENDING),
                name="request_one_pending_cimd_change",
            ),
            # At most one adoption of a shadow client waits for review (approvals.preregistration).
            models.UniqueConstraint(
                fields=["client"],
                condition=Q(kind=RequestKind.ADOPTION, state=RequestState.PENDING),
                name="request_one_pending_adoption",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_name or self.public_id} ({self.state})"


class CimdPin(models.Model):
    """The Client ID Metadata Document a CIMD client was approved on, pinned (docs/cimd.md "Pinning and drift"):
    its SHA-256, body and key set, and what the drift check (``approvals.cimd.pinning``) last found. The IdP
    keeps the pinned version until a narrowing change is applied or a widening one is approved."""

    client = models.OneToOneField(
        "inventory.Client", verbose_name=_("client"), on_delete=models.CASCADE, related_name="cimd_pin"
    )
    url = models.CharField(_("client metadata document URL"), max_length=2000)
    sha256 = models.CharField(_("pinned SHA-256"), max_length=64)
    document = models.JSONField(_("pinned document"))
    keys = models.JSONField(_("pinned key set"), null=True, blank=True)
    pinned_at = models.DateTimeField(_("pinned at"))
    next_check_at = models.DateTimeField(_("next check at"))
    last_fetched_at = models.DateTimeField(_("last fetched at"), null=True, blank=True)
    last_sha256 = models.CharField(_("last fetched SHA-256"), max_length=64, blank=True)
    last_result = models.CharField(_("last result"), max_length=16, blank=True)
    last_reasons = models.JSONField(_("last drift reasons"), default=list)
    last_diff = models.TextField(_("last diff against the pinned document"), blank=True)
    last_error = models.CharField(_("last refusal"), max_length=500, blank=True)
    unreachable_since = models.DateTimeField(_("unreachable since"), null=True, blank=True)
    change_request = models.ForeignKey(
        RegistrationRequest,
        verbose_name=_("change request"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("pinned CIMD document")
        indexes = [models.Index(fields=["next_check_at"], name="cimd_pin_due_idx")]

    def __str__(self) -> str:
        return f"{self.url} @ {self.sha256[:12]}"


class Decision(models.Model):
    """One approver's approve/deny with a reason."""

    request = models.ForeignKey(
        RegistrationRequest, verbose_name=_("request"), on_delete=models.CASCADE, related_name="decisions"
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("approver"), on_delete=models.PROTECT, related_name="decisions"
    )
    kind = models.CharField(_("decision"), max_length=8, choices=DecisionKind.choices)
    reason = models.TextField(_("reason"), blank=True)
    granted_scopes = models.JSONField(_("granted scopes"), null=True, blank=True)
    granted_ttl = models.PositiveIntegerField(_("granted TTL (s)"), null=True, blank=True)
    created_at = models.DateTimeField(_("decided at"), auto_now_add=True)

    class Meta:
        verbose_name = _("decision")
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="decision_one_per_approver"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.approver_id} on {self.request_id}"


class UnauthorizedTally(models.Model):
    """Refused credentials on the registration API, counted per minute, source and credential prefix.

    The request path only upserts a row here (``approvals.unauthorized``); a periodic fold turns each closed
    minute's rows into one audit event per row and deletes them. The audit chain holds decisions; garbage
    traffic costs a counter, not a chain append. ``source`` is the client address, or ``*<n>`` for the
    "other sources" buckets once a minute holds its cap of rows; ``credential_prefix`` is ``*`` for "other
    credentials" of a source past its own cap.
    """

    minute = models.DateTimeField(_("minute"))
    source = models.CharField(_("source address"), max_length=64)
    action = models.CharField(_("action"), max_length=64)
    credential_prefix = models.CharField(_("credential prefix"), max_length=16, blank=True)
    count = models.PositiveBigIntegerField(_("count"), default=1)
    first_at = models.DateTimeField(_("first seen at"))
    last_at = models.DateTimeField(_("last seen at"))
    path = models.CharField(_("last path"), max_length=200, blank=True)
    error = models.CharField(_("last error code"), max_length=64, blank=True)
    reason = models.CharField(_("last reason"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("refused credential tally")
        verbose_name_plural = _("refused credential tallies")
        # (minute, source) leads: the per-minute and per-source caps count rows over this index's prefixes.
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "source", "action", "credential_prefix"], name="unauthorized_tally_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.source} {self.credential_prefix} @ {self.minute:%Y-%m-%d %H:%M} x{self.count}"


# --- counts kept as requests change (approvals.counts; docs/scale.md) ------------------------------------------
# Like the clients' (inventory.counts): a trigger on the request table inserts a -1 row for what a request was
# and a +1 row for what it became, in the transaction that changes it; the one folder moves them into the
# rollups below. Ids are plain integers (0 = none).


class RequestCountDelta(models.Model):
    """One request's signature entering (+1) or leaving (-1) the counts; insert-only, folded in the background."""

    id = models.BigAutoField(primary_key=True)
    n = models.SmallIntegerField(_("delta"))
    state = models.CharField(_("state"), max_length=16)
    outcome = models.CharField(_("policy outcome"), max_length=16)
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    team_id = models.IntegerField(_("team"))
    created_at = models.DateTimeField(_("submitted at"))
    decided_at = models.DateTimeField(_("decided at"), null=True)
    coalesced_count = models.PositiveIntegerField(_("registrations coalesced into it"))

    class Meta:
        verbose_name = _("request count delta")

    def __str__(self) -> str:
        return f"{self.n:+d} {self.state} team {self.team_id}"


class RequestDayColumns(models.Model):
    """Requests per (day submitted, state, policy outcome, tier): the columns of the per-day rollup and of its
    all-teams projection."""

    day = models.DateField(_("day"))
    state = models.CharField(_("state"), max_length=16)
    outcome = models.CharField(_("policy outcome"), max_length=16)
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    n = models.BigIntegerField(_("requests"), default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.n} {self.state} {self.day}"


class RequestDayCount(RequestDayColumns):
    """Requests per (day submitted, team, state, policy outcome, tier): registrations per day by outcome."""

    team_id = models.IntegerField(_("team"))

    class Meta:
        verbose_name = _("request count per day")
        constraints = [
            models.UniqueConstraint(
                fields=["team_id", "day", "state", "outcome", "risk_tier"], name="request_day_count_key"
            )
        ]


class RequestCoalescedCount(models.Model):
    """Anonymous registrations answered with an existing request, per (day the request was submitted, team)."""

    day = models.DateField(_("day"))
    team_id = models.IntegerField(_("team"))
    n = models.BigIntegerField(_("registrations coalesced"), default=0)

    class Meta:
        verbose_name = _("coalesced registrations per day")
        constraints = [models.UniqueConstraint(fields=["team_id", "day"], name="request_coalesced_count_key")]

    def __str__(self) -> str:
        return f"{self.n} coalesced {self.day}"


class RequestDecisionCount(models.Model):
    """Human decisions per (day decided, team, bucket of the time to decision; ``inventory.histograms``). No tier:
    the rows grow with days × teams × buckets in use, and the dashboards ask for none."""

    day = models.DateField(_("day decided"))
    team_id = models.IntegerField(_("team"))
    bucket = models.SmallIntegerField(_("time to decision bucket"))
    n = models.BigIntegerField(_("decisions"), default=0)

    class Meta:
        verbose_name = _("human decisions per time to decision")
        # team first, as in the two above: a team's days are a range of the index; everyone's read the projections
        constraints = [models.UniqueConstraint(fields=["team_id", "day", "bucket"], name="request_decision_count_key")]

    def __str__(self) -> str:
        return f"{self.n} decided {self.day} bucket {self.bucket}"


# All-teams projections of the three rollups above (inventory.counts.Projection): the same counts summed over the
# teams, kept by the same folder, so the security dashboard reads days × outcomes, not days × teams × outcomes.


class RequestDayCountAllTeams(RequestDayColumns):
    """RequestDayCount summed over the teams."""

    class Meta:
        verbose_name = _("request count per day, all teams")
        constraints = [
            models.UniqueConstraint(fields=["day", "state", "outcome", "risk_tier"], name="request_day_count_all_key")
        ]


class RequestCoalescedCountAllTeams(models.Model):
    """RequestCoalescedCount summed over the teams."""

    day = models.DateField(_("day"), unique=True)
    n = models.BigIntegerField(_("registrations coalesced"), default=0)

    class Meta:
        verbose_name = _("coalesced registrations per day, all teams")

    def __str__(self) -> str:
        return f"{self.n} coalesced {self.day}"


class RequestDecisionCountAllTeams(models.Model):
    """RequestDecisionCount summed over the teams."""

    day = models.DateField(_("day decided"))
    bucket = models.SmallIntegerField(_("time to decision bucket"))
    n = models.BigIntegerField(_("decisions"), default=0)

    class Meta:
        verbose_name = _("human decisions per time to decision, all teams")
        constraints = [models.UniqueConstraint(fields=["day", "bucket"], name="request_decision_count_all_key")]

    def __str__(self) -> str:
        return f"{self.n} decided {self.day} bucket {self.bucket}"
