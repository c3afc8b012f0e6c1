"""What exists: scopes, teams, identity providers, clients, and the outbox to the IdPs.

Over 400 lines on purpose: an app's models stay in one module (Django's convention, and what migrations and
admin expect to find); the behaviour lives in services, selectors and the lifecycle package, not here."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from inventory.choices import (
    LIVE_STATES,
    ClientState,
    CreatedVia,
    HoldKind,
    IdPKind,
    OutboxOperation,
    OutboxStatus,
    RiskTier,
    ScopeCategory,
    Sensitivity,
)
from inventory.querysets import ClientQuerySet, OutboxQuerySet
from portal.crypto import EncryptedJSONField

LIVE_STATE_VALUES = sorted(str(state) for state in LIVE_STATES)  # in a fixed order, for the partial indexes


class ScopeDefinition(models.Model):
    """The catalogue of scopes an agent may ask for. Unknown scopes are refused."""

    name = models.CharField(_("name"), max_length=128, unique=True)
    description = models.TextField(_("description"), blank=True)
    sensitivity = models.CharField(_("sensitivity"), max_length=8, choices=Sensitivity.choices)
    category = models.CharField(_("category"), max_length=32, choices=ScopeCategory.choices)
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("scope")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    name = models.CharField(_("name"), max_length=128, unique=True)
    slug = models.SlugField(_("slug"), max_length=64, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, verbose_name=_("members"), related_name="teams", blank=True
    )
    manager = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("manager"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="managed_teams",
    )
    notify_email = models.EmailField(_("notification e-mail"), blank=True)
    max_live_clients = models.PositiveIntegerField(_("max live clients"), null=True, blank=True)

    class Meta:
        verbose_name = _("team")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class IdPConnection(models.Model):
    """One identity provider Registrar provisions clients into. Credentials are encrypted at rest."""

    name = models.CharField(_("name"), max_length=128, unique=True)
    kind = models.CharField(_("kind"), max_length=32, choices=IdPKind.choices)
    config = models.JSONField(
        _("configuration"), default=dict, blank=True, help_text=_("Non-secret settings: endpoints, realm, issuer.")
    )
    secrets = EncryptedJSONField(
        _("credentials"), blank=True, default=dict, help_text=_("Encrypted with REGISTRAR_ENCRYPTION_KEY.")
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    is_default = models.BooleanField(_("default for new registrations"), default=False)
    repair_drift = models.BooleanField(_("repair drift automatically"), default=False)
    last_reconciled_at = models.DateTimeField(_("last reconciled at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("IdP connection")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="idp_one_default"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dry_run(self) -> bool:
        return self.kind == IdPKind.DRY_RUN

    @property
    def issuer(self) -> str:
        return self.config.get("issuer", "")

    @property
    def token_endpoint(self) -> str:
        return self.config.get("token_endpoint", "")


class Client(models.Model):
    """A non-human identity as it exists at an IdP, with its owner, purpose and lifecycle.

    ``registration_id`` is Registrar's opaque id, shared with the RegistrationRequest that created
    it (RFC 7592 URIs use it). State changes go through ``inventory.lifecycle`` only.
    """

    registration_id = models.CharField(_("registration id"), max_length=40, unique=True)
    # The foreign keys idp, owner, team and parent have no index of their own: the indexes in Meta lead with them
    # (idp/owner/team + state, parent), and each index is one more write per client change (migration 0023).
    idp = models.ForeignKey(
        IdPConnection, verbose_name=_("IdP"), on_delete=models.PROTECT, related_name="clients", db_index=False
    )
    idp_client_id = models.CharField(_("client id at the IdP"), max_length=255, null=True, blank=True)
    idp_state = EncryptedJSONField(_("IdP registration state"), blank=True, default=dict)
    name = models.CharField(_("name"), max_length=200)
    software_id = models.CharField(_("software id"), max_length=255, blank=True)
    software_version = models.CharField(_("software version"), max_length=64, blank=True)
    spiffe_id = models.CharField(_("SPIFFE ID"), max_length=512, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="clients",
        db_index=False,
    )
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="clients",
        db_index=False,
    )
    purpose = models.TextField(_("purpose"), blank=True)
    scopes = models.JSONField(_("scopes"), default=list, blank=True)
    audiences = models.JSONField(_("service boundary (audiences)"), default=list, blank=True)
    internal_only = models.BooleanField(_("internal only"), default=False)
    metadata = models.JSONField(_("client metadata"), default=dict, blank=True)
    auth_method = models.CharField(_("token endpoint auth method"), max_length=64, default="private_key_jwt")
    jwks = models.JSONField(_("public JWKS"), null=True, blank=True)
    jwks_uri = models.URLField(_("JWKS URI"), max_length=512, blank=True)
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent client"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        db_index=False,
    )
    depth = models.PositiveSmallIntegerField(_("lineage depth"), default=0)
    risk_tier = models.CharField(_("risk tier"), max_length=8, choices=RiskTier.choices, default=RiskTier.LOW)
    state = models.CharField(_("state"), max_length=16, choices=ClientState.choices, default=ClientState.PROVISIONING)
    created_via = models.CharField(
        _("created via"), max_length=24, choices=CreatedVia.choices, default=CreatedVia.TOKEN
    )
    policy_version = models.PositiveIntegerField(_("policy version"), null=True, blank=True)
    managed = models.BooleanField(
        _("managed by Registrar"),
        default=True,
        help_text=_("False for shadow clients found at the IdP by reconciliation."),
    )
    # no index of its own: client_created_id_idx (created_at, id) serves every read by creation time
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    activated_at = models.DateTimeField(_("activated at"), null=True, blank=True)
    state_changed_at = models.DateTimeField(_("state changed at"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    idp_disabled_at = models.DateTimeField(_("disabled at IdP at"), null=True, blank=True)
    expiry_overshoot_seconds = models.FloatField(_("expiry overshoot (s)"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    # Where last_used_at came from: "usage-api:<token name>", "idp:<connection>" (inventory.usage).
    last_used_source = models.CharField(
        _("last use reported by"), max_length=128, blank=True, default="", db_default=""
    )
    # Periodic attestation by the owner that the client is still needed and its scopes still right
    # (inventory.lifecycle_policies): due every N days by tier from this, else from activation or creation.
    attested_at = models.DateTimeField(_("attested at"), null=True, blank=True)
    attested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("attested by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    last_synced_at = models.DateTimeField(_("last synced at"), null=True, blank=True)
    sync_failed = models.BooleanField(_("sync failed"), default=False)
    drift = models.JSONField(_("drift found by reconciliation"), null=True, blank=True)
    discovered_at = models.DateTimeField(_("discovered at"), null=True, blank=True)
    orphaned_at = models.DateTimeField(_("orphaned at"), null=True, blank=True)
    stale_at = models.DateTimeField(_("flagged stale at"), null=True, blank=True)
    # The expiry the owner was last reminded of (inventory.notifications.notify_expiring): one reminder per
    # expiry; a renewal moves expires_at and so makes the next one due.
    expiry_reminded_for = models.DateTimeField(_("expiry reminded of"), null=True, blank=True)
    renewals = models.PositiveIntegerField(_("renewals"), default=0)
    # The approved ceiling: what the last approval (policy auto-approval, the final human approval, an
    # approved renewal) granted. A renewal inside it may be direct (low/medium tier); anything beyond it
    # goes back to review. NULL: no approval on record (e.g. a shadow client found at the IdP).
    ceiling_scopes = models.JSONField(_("approved scopes"), null=True, blank=True)
    ceiling_ttl_seconds = models.PositiveIntegerField(_("approved lifetime per renewal (s)"), null=True, blank=True)
    ceiling_audiences = models.JSONField(_("approved audiences"), null=True, blank=True)
    # A hold: a suspension by security or an admin that only they can lift (inventory.containment).
    # db_default on the NOT NULL columns: bulk loaders that COPY a column list (seed_scale) need none.
    hold_kind = models.CharField(
        _("hold"), max_length=16, choices=HoldKind.choices, blank=True, default="", db_default=""
    )
    hold_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("held by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    hold_at = models.DateTimeField(_("held at"), null=True, blank=True)
    hold_reason = models.TextField(_("hold reason"), blank=True, default="", db_default="")
    hold_ref = models.CharField(
        _("hold reference"),
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text=_("The break-glass decision or the held ancestor behind the hold."),
    )
    # Spawning: how many children this client's registration access token has spawned (consumed in the
    # statement that accepts a spawn, like an initial access token's uses), and whether containment took
    # the right away.
    children_spawned = models.PositiveIntegerField(_("children spawned"), default=0, db_default=0)
    spawn_revoked_at = models.DateTimeField(_("spawn right revoked at"), null=True, blank=True)
    spawn_revoked_reason = models.TextField(_("why the spawn right was revoked"), blank=True, default="", db_default="")
    # Kept true by the database, never written by code (inventory.flag_triggers; approvals' migration 0022 for
    # two_person_approved): the framework report counts the live clients failing the first two from the small
    # partial indexes below, and the third from the counts' cube, instead of evaluating the catalogue, the parent
    # or the approvals for every client.
    # Nullable with a constant db_default so adding them altered the table in place (SQLite would otherwise
    # rebuild it and drop its triggers); the triggers never leave them NULL.
    uncatalogued_scopes = models.BooleanField(
        _("holds a scope outside the catalogue"), null=True, db_default=False, editable=False
    )
    outside_parent = models.BooleanField(
        _("holds more than its parent or outlives it"), null=True, db_default=False, editable=False
    )
    two_person_approved = models.BooleanField(
        _("registration approved by two people"), null=True, db_default=False, editable=False
    )

    objects = ClientQuerySet.as_manager()

    class Meta:
        verbose_name = _("client")
        indexes = [
            # risk tier and team included: the framework report's TTL-ceiling edge hour counts from the index alone
            models.Index(fields=["state", "expires_at"], name="client_state_expiry_idx", include=["risk_tier", "team"]),
            # The inventory's commonest filter pair, newest first: a LIMITed page scans only matching rows.
            models.Index(fields=["state", "risk_tier", "created_at", "id"], name="client_state_tier_created_idx"),
            models.Index(fields=["owner", "state"], name="client_owner_state_idx"),
            models.Index(fields=["idp", "state"], name="client_idp_state_idx"),
            models.Index(fields=["team", "state"], name="client_team_state_idx"),
            models.Index(fields=["state", "last_used_at"], name="client_state_lastused_idx"),
            models.Index(fields=["parent"], name="client_parent_idx"),
            models.Index(fields=["orphaned_at"], name="client_orphaned_idx", condition=Q(orphaned_at__isnull=False)),
            # The framework report's failing clients, each index holding only them (docs/scale.md, "Controls"):
            # counting one is a read of its failures, whatever the number of clients.
            # The orphan control's edge hour (the rest is counted: ClientOrphanCount): orphaning time first, so
            # everyone's edge is one range; a team's filters the hour's few entries.
            models.Index(
                fields=["orphaned_at", "team"],
                name="client_orphan_active_idx",
                condition=Q(orphaned_at__isnull=False, state__in=["active", "provisioning"]),
            ),
            models.Index(
                fields=["team"],
                name="client_uncatalogued_idx",
                condition=Q(uncatalogued_scopes=True, state__in=LIVE_STATE_VALUES),
            ),
            models.Index(
                fields=["team"],
                name="client_outside_parent_idx",
                condition=Q(outside_parent=True, state__in=LIVE_STATE_VALUES),
            ),
            # The attestation control's edge week: active clients by when their attestation period started (and
            # their team). The expression's columns are included so PostgreSQL counts from the index alone.
            models.Index(
                "risk_tier",
                Coalesce("attested_at", "activated_at", "created_at"),
                "team",
                name="client_attest_basis_idx",
                include=["attested_at", "activated_at", "created_at"],
                condition=Q(state="active", managed=True),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idp", "idp_client_id"],
                condition=Q(idp_client_id__isnull=False),
                name="client_unique_idp_client_id",
            ),
            models.CheckConstraint(condition=Q(state__in=ClientState.values), name="client_state_valid"),
            # The database's own guarantee behind holds: whatever path writes, a held client is not active.
            models.CheckConstraint(
                condition=Q(hold_kind="") | ~Q(state=ClientState.ACTIVE), name="client_held_not_active"
            ),
            models.CheckConstraint(condition=Q(hold_kind__in=["", *HoldKind.values]), name="client_hold_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.registration_id})"

    @property
    def is_held(self) -> bool:
        return bool(self.hold_kind)

    @property
    def can_spawn(self) -> bool:
        return self.spawn_revoked_at is None


class OutboxEntry(models.Model):
    """A change that must reach an IdP, written in the same transaction as the state change.

    Workers deliver entries in id order per client, idempotently; failures retry with backoff and
    end as ``dead`` after ``REGISTRAR_OUTBOX_MAX_ATTEMPTS`` (the client is then flagged sync_failed).
    """

    client = models.ForeignKey(Client, verbose_name=_("client"), on_delete=models.CASCADE, related_name="outbox")
    idp = models.ForeignKey(IdPConnection, verbose_name=_("IdP"), on_delete=models.CASCADE, related_name="outbox")
    operation = models.CharField(_("operation"), max_length=16, choices=OutboxOperation.choices)
    status = models.CharField(_("status"), max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"))
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    # A worker leases an entry before calling the IdP (conditional UPDATE, see inventory.outbox.leases);
    # a lease that runs out (worker killed) makes the entry claimable again.
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    claimed_by = models.CharField(_("claimed by"), max_length=128, blank=True)
    # Set just before a call to an IdP that cannot list its clients, cleared once the call's outcome is
    # recorded (see inventory.outbox.journal): still set on a later attempt, an earlier call may have
    # taken effect without Registrar learning its answer.
    idp_call_started_at = models.DateTimeField(_("unconfirmed IdP call started at"), null=True, blank=True)

    objects = OutboxQuerySet.as_manager()

    class Meta:
        verbose_name = _("outbox entry")
        verbose_name_plural = _("outbox entries")
        indexes = [
            models.Index(fields=["next_attempt_at"], name="outbox_due_idx", condition=Q(status="pending")),
            # Dead letters are few among millions of delivered rows: counted on every metrics scrape, listed on
            # the sync failures page.
            models.Index(fields=["id"], name="outbox_dead_idx", condition=Q(status="dead")),
            models.Index(fields=["client", "id"], name="outbox_client_order_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.client_id} ({self.status})"


class TransferState(models.TextChoices):
    PENDING = "pending", _("Pending")
    ACCEPTED = "accepted", _("Accepted")
    DECLINED = "declined", _("Declined")
    CANCELLED = "cancelled", _("Cancelled")


class TransferOffer(models.Model):
    """An owner offers a client to another active person; ownership moves only when they accept."""

    client = models.ForeignKey(
        Client, verbose_name=_("client"), on_delete=models.CASCADE, related_name="transfer_offers"
    )
    from_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("offered by owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    to_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("offered to"),
        on_delete=models.CASCADE,
        related_name="transfer_offers_received",
    )
    offered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("offered by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    state = models.CharField(_("state"), max_length=16, choices=TransferState.choices, default=TransferState.PENDING)
    reason = models.TextField(_("reason"), blank=True)
    created_at = models.DateTimeField(_("offered at"), auto_now_add=True)
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)

    class Meta:
        verbose_name = _("transfer offer")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["to_user", "state"], name="transfer_inbox_idx")]
        constraints = [
            models.UniqueConstraint(fields=["client"], condition=Q(state="pending"), name="transfer_one_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} → {self.to_user_id} ({self.state})"


class OwnerDigest(models.Model):
    """One notification digest per person, kind and day: the marker that keeps digests idempotent."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(_("kind"), max_length=32)
    day = models.DateField(_("day"))
    client_count = models.PositiveIntegerField(_("clients"), default=0)
    sent_at = models.DateTimeField(_("sent at"), auto_now_add=True)

    class Meta:
        verbose_name = _("owner digest")
        constraints = [models.UniqueConstraint(fields=["user", "kind", "day"], name="digest_one_per_day")]

    def __str__(self) -> str:
        return f"{self.kind} digest for {self.user_id} on {self.day}"


class LifecyclePolicy(models.Model):
    """A version of the lifecycle rules (attestation, inactivity): saving creates a new version, which is active
    at once, or as ``monitor_only`` (issues shown, no action taken). ``inventory.lifecycle_policies``."""

    version = models.PositiveIntegerField(_("version"), unique=True)
    rules = models.JSONField(_("rules"), default=dict)
    monitor_only = models.BooleanField(
        _("monitor only"), default=False, help_text=_("Compliance issues are shown; no action is taken.")
    )
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
        verbose_name = _("lifecycle policy version")
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="lifecycle_policy_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"lifecycle policy v{self.version}{' (monitor only)' if self.monitor_only else ''}"


class ComplianceIssue(models.Model):
    """A client out of line with a lifecycle rule: since when, what happens when its grace ends, and whether
    it happened. At most one open issue per client and rule; acting on it happens once (``acted_at``)."""

    client = models.ForeignKey(
        Client, verbose_name=_("client"), on_delete=models.CASCADE, related_name="compliance_issues"
    )
    rule = models.CharField(_("rule"), max_length=24)
    since = models.DateTimeField(_("since"))
    action = models.CharField(_("action"), max_length=16)
    action_due_at = models.DateTimeField(_("action due at"))
    policy_version = models.PositiveIntegerField(_("lifecycle policy version"))
    flagged_at = models.DateTimeField(_("flagged at"), default=timezone.now)
    acted_at = models.DateTimeField(_("acted on at"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    resolution = models.CharField(_("resolution"), max_length=64, blank=True)

    class Meta:
        verbose_name = _("compliance issue")
        constraints = [
            models.UniqueConstraint(
                fields=["client", "rule"], condition=Q(resolved_at__isnull=True), name="compliance_one_open_per_rule"
            ),
        ]
        indexes = [
            models.Index(
                fields=["action_due_at", "id"],
                name="compliance_due_idx",
                condition=Q(resolved_at__isnull=True, acted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule} issue on {self.client_id}"


class SponsorState(models.TextChoices):
    PENDING = "pending", _("Invited")
    ACTIVE = "active", _("Active")
    DECLINED = "declined", _("Declined")
    REMOVED = "removed", _("Left or removed")


class ClientSponsor(models.Model):
    """A co-sponsor of a client besides its owner: invited by the owner, counted once they accept. The
    lifecycle policy's sponsors rule asks for a minimum per tier (``inventory.lifecycle_policies.sponsors``)."""

    client = models.ForeignKey(Client, verbose_name=_("client"), on_delete=models.CASCADE, related_name="sponsors")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("sponsor"), on_delete=models.CASCADE, related_name="sponsorships"
    )
    state = models.CharField(_("state"), max_length=16, choices=SponsorState.choices, default=SponsorState.PENDING)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("invited by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("invited at"), default=timezone.now)
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)

    class Meta:
        verbose_name = _("co-sponsor")
        constraints = [
            models.UniqueConstraint(
                fields=["client", "user"],
                condition=Q(state__in=["pending", "active"]),
                name="sponsor_one_live_per_user",
            ),
        ]
        indexes = [models.Index(fields=["user", "state"], name="sponsor_inbox_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} sponsors {self.client_id} ({self.state})"


# --- counts kept as clients change (inventory.counts; docs/scale.md) -------------------------------------------
# A database trigger on the client table inserts a -1 row for what a client was and a +1 row for what it
# became, in the transaction that changes it; the folder (inventory.counts.counts_fold) moves those deltas into
# the rollup tables below. No row is updated by a writer: two registrations never wait for each other here.
# Ids are plain integers (0 = none) so the rollups' unique keys hold without NULLs and survive deletions.


class ClientCountDelta(models.Model):
    """One client's signature entering (+1) or leaving (-1) the counts; insert-only, folded in the background."""

    id = models.BigAutoField(primary_key=True)
    n = models.SmallIntegerField(_("delta"))
    state = models.CharField(_("state"), max_length=16)
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    team_id = models.IntegerField(_("team"))
    idp_id = models.IntegerField(_("IdP"))
    owner_id = models.IntegerField(_("owner"))
    created_via = models.CharField(_("created via"), max_length=24)
    depth = models.SmallIntegerField(_("lineage depth"))
    auth_method = models.CharField(_("token endpoint auth method"), max_length=64)
    managed = models.BooleanField(_("managed"))
    orphaned = models.BooleanField(_("orphaned"))
    stale = models.BooleanField(_("stale"))
    sync_failed = models.BooleanField(_("sync failed"))
    drifted = models.BooleanField(_("drifted"))
    no_purpose = models.BooleanField(_("no purpose"))
    created_at = models.DateTimeField(_("created at"))
    ended_at = models.DateTimeField(_("ended at"), null=True)
    expires_at = models.DateTimeField(_("expires at"), null=True)
    expiry_overshoot_seconds = models.FloatField(_("expiry overshoot (s)"), null=True)
    # when the client's attestation period started: its last attestation, else activation, else creation
    attest_basis = models.DateTimeField(_("attestation period from"), null=True)
    # nullable: added in place (migration 0027); a delta from before reads as "not two-person", "not orphaned"
    two_person = models.BooleanField(_("approved by two people"), null=True)
    orphaned_at = models.DateTimeField(_("orphaned at"), null=True)

    class Meta:
        verbose_name = _("client count delta")

    def __str__(self) -> str:
        return f"{self.n:+d} {self.state} team {self.team_id}"


# The columns a ClientCount row is counted by (its unique key), in the order inventory.counts reads and writes them.
CLIENT_COUNT_KEY = (
    "team_id",
    "state",
    "risk_tier",
    "idp_id",
    "created_via",
    "depth",
    "auth_method",
    "managed",
    "orphaned",
    "stale",
    "sync_failed",
    "drifted",
    "no_purpose",
    "no_expiry",
    "two_person",
)


class CubeColumns(models.Model):
    """The cube's counted columns (all of ``CLIENT_COUNT_KEY`` but the team) and its count, shared by the cube
    and its all-teams projection."""

    state = models.CharField(_("state"), max_length=16)
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    idp_id = models.IntegerField(_("IdP"))
    created_via = models.CharField(_("created via"), max_length=24)
    depth = models.SmallIntegerField(_("lineage depth"))
    auth_method = models.CharField(_("token endpoint auth method"), max_length=64)
    managed = models.BooleanField(_("managed"))
    orphaned = models.BooleanField(_("orphaned"))
    stale = models.BooleanField(_("stale"))
    sync_failed = models.BooleanField(_("sync failed"))
    drifted = models.BooleanField(_("drifted"))
    no_purpose = models.BooleanField(_("no purpose"))
    no_expiry = models.BooleanField(_("no expiry"))
    # Client.two_person_approved: the high-tier approval control counted from the cube (docs/scale.md)
    two_person = models.BooleanField(_("approved by two people"), default=False, db_default=False)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        abstract = True


class ClientCount(CubeColumns):
    """Clients per (team, state, tier, IdP, path, depth, auth method, flags): the dashboards' and controls' cube."""

    team_id = models.IntegerField(_("team"))

    class Meta:
        verbose_name = _("client count")
        constraints = [models.UniqueConstraint(fields=list(CLIENT_COUNT_KEY), name="client_count_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.state} {self.risk_tier} team {self.team_id}"


class ClientOwnerCount(models.Model):
    """Clients per (owner, team, state): top owners and the owner-bound control."""

    owner_id = models.IntegerField(_("owner"))
    team_id = models.IntegerField(_("team"))
    state = models.CharField(_("state"), max_length=16)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per owner")
        # team first: a team's reads (its dashboard, its report) are a range of this index; everyone's read the
        # projections (ClientOwnerLiveCount)
        constraints = [models.UniqueConstraint(fields=["team_id", "owner_id", "state"], name="client_owner_count_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.state} owner {self.owner_id}"


class ClientExpiryCount(models.Model):
    """Live clients per (team, state, tier, hour of expiry): expiring soon and the TTL-ceiling control."""

    team_id = models.IntegerField(_("team"))
    state = models.CharField(_("state"), max_length=16)
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    expires_hour = models.DateTimeField(_("expires within the hour starting"))
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per expiry hour")
        constraints = [
            models.UniqueConstraint(
                fields=["team_id", "state", "risk_tier", "expires_hour"], name="client_expiry_count_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.n} {self.state} expiring {self.expires_hour:%Y-%m-%d %H}h"


class ClientDayCount(models.Model):
    """Clients created (``kind`` created) or ended (``kind`` ended) per team and day: the activity axis."""

    day = models.DateField(_("day"))
    team_id = models.IntegerField(_("team"))
    kind = models.CharField(_("kind"), max_length=8)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per day")
        # team first: a team's 90 days are a range of this index (day first, they were 90 days × every team)
        constraints = [models.UniqueConstraint(fields=["team_id", "day", "kind"], name="client_day_count_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.kind} {self.day}"


class ClientOrphanCount(models.Model):
    """Active and provisioning clients whose owner left, per (team, hour they were orphaned): the orphan-grace
    control counts the whole hours past grace here and only the hour grace ends in from an index."""

    team_id = models.IntegerField(_("team"))
    orphaned_hour = models.DateTimeField(_("orphaned within the hour starting"))
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per orphaning hour")
        constraints = [models.UniqueConstraint(fields=["team_id", "orphaned_hour"], name="client_orphan_count_key")]

    def __str__(self) -> str:
        return f"{self.n} orphaned {self.orphaned_hour:%Y-%m-%d %H}h"


class ClientOvershootCount(models.Model):
    """Clients per (team, expiry overshoot bucket) (``inventory.histograms``): the dashboard's overshoot p99."""

    team_id = models.IntegerField(_("team"))
    bucket = models.SmallIntegerField(_("overshoot bucket"))
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per expiry overshoot")
        constraints = [models.UniqueConstraint(fields=["team_id", "bucket"], name="client_overshoot_count_key")]

    def __str__(self) -> str:
        return f"{self.n} overshoot bucket {self.bucket}"


# --- all-teams projections of the rollups above (inventory.counts.Projection; docs/scale.md) --------------------
# The same counts without the team (and, for owners, only the live states): folded, recounted and repaired with
# their rollup, so an all-teams dashboard reads rows per state × tier × … and not per team × owner as well.


class ClientCountAllTeams(CubeColumns):
    """ClientCount summed over the teams: the security dashboard's and the all-teams report's cube."""

    class Meta:
        verbose_name = _("client count, all teams")
        constraints = [models.UniqueConstraint(fields=list(CLIENT_COUNT_KEY[1:]), name="client_count_all_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.state} {self.risk_tier}"


class ClientTeamCount(models.Model):
    """Clients per (team, state): the dashboard's clients by team."""

    team_id = models.IntegerField(_("team"))
    state = models.CharField(_("state"), max_length=16)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per team")
        constraints = [models.UniqueConstraint(fields=["team_id", "state"], name="client_team_count_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.state} team {self.team_id}"


class ClientOwnerLiveCount(models.Model):
    """Live clients per owner, every team: top owners and the owner-bound control for everyone."""

    owner_id = models.IntegerField(_("owner"), unique=True)
    n = models.BigIntegerField(_("live clients"), default=0)

    class Meta:
        verbose_name = _("live client count per owner")
        # the top owners are read from the top of this index (inventory.selectors.counts.top_owners)
        indexes = [models.Index(fields=["-n", "owner_id"], name="client_owner_live_top_idx")]

    def __str__(self) -> str:
        return f"{self.n} live owner {self.owner_id}"


class ClientExpiryCountAllTeams(models.Model):
    """ClientExpiryCount summed over the teams."""

    state = models.CharField(_("state"), max_length=16)
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    expires_hour = models.DateTimeField(_("expires within the hour starting"))
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per expiry hour, all teams")
        constraints = [
            models.UniqueConstraint(fields=["state", "risk_tier", "expires_hour"], name="client_expiry_count_all_key")
        ]

    def __str__(self) -> str:
        return f"{self.n} {self.state} expiring {self.expires_hour:%Y-%m-%d %H}h"


class ClientDayCountAllTeams(models.Model):
    """ClientDayCount summed over the teams."""

    day = models.DateField(_("day"))
    kind = models.CharField(_("kind"), max_length=8)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per day, all teams")
        constraints = [models.UniqueConstraint(fields=["day", "kind"], name="client_day_count_all_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.kind} {self.day}"


class ClientOrphanCountAllTeams(models.Model):
    """ClientOrphanCount summed over the teams."""

    orphaned_hour = models.DateTimeField(_("orphaned within the hour starting"), unique=True)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per orphaning hour, all teams")

    def __str__(self) -> str:
        return f"{self.n} orphaned {self.orphaned_hour:%Y-%m-%d %H}h"


class ClientOvershootCountAllTeams(models.Model):
    """ClientOvershootCount summed over the teams."""

    bucket = models.SmallIntegerField(_("overshoot bucket"), unique=True)
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per expiry overshoot, all teams")

    def __str__(self) -> str:
        return f"{self.n} overshoot bucket {self.bucket}"


class ClientAttestCount(models.Model):
    """Active managed clients per (team, tier, UTC week (its Monday) their attestation period started): a team's
    "Owners re-attest" control without reading the clients. By week, not day: by team and day it held a row for
    nearly every active client at 10M (5M rows); a team's report counts the week its tier's cut falls in exactly,
    from an index."""

    team_id = models.IntegerField(_("team"))
    risk_tier = models.CharField(_("risk tier"), max_length=8)
    week = models.DateField(_("attestation period from (week)"))
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per attestation week")
        constraints = [models.UniqueConstraint(fields=["team_id", "risk_tier", "week"], name="client_attest_count_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.risk_tier} attested from the week of {self.week}"


class ClientAttestDayCount(models.Model):
    """Active managed clients of every team per (tier, UTC day their attestation period started): everyone's
    attestation control. A rollup of its own, not a projection (a projection cannot be finer than its rollup):
    by day the cut's own day, counted exactly from an index, holds a seventh of a week's clients (27k → 4k for
    the medium tier at 10M); without the team it stays a few thousand rows."""

    risk_tier = models.CharField(_("risk tier"), max_length=8)
    day = models.DateField(_("attestation period from (day)"))
    n = models.BigIntegerField(_("clients"), default=0)

    class Meta:
        verbose_name = _("client count per attestation day, all teams")
        constraints = [models.UniqueConstraint(fields=["risk_tier", "day"], name="client_attest_day_count_key")]

    def __str__(self) -> str:
        return f"{self.n} {self.risk_tier} attested from {self.day}"
