"""Shared kernel models: people, API tokens and the audit transparency log (events, tiles, checkpoints)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person (or, flagged, a service principal) who can sign in to Registrar.

    Roles are Django groups (see ``portal.roles``). ``is_active=False`` is the leaver signal the
    orphan sweep acts on, whether an admin, the SCIM directory or SSO turned it off.
    """

    is_service_account = models.BooleanField(
        _("service account"),
        default=False,
        help_text=_("A non-human principal. It can never approve a registration."),
    )
    manager = models.ForeignKey(
        "self", verbose_name=_("manager"), null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )
    external_id = models.CharField(
        _("directory id"), max_length=255, null=True, blank=True, unique=True, help_text=_("SCIM externalId")
    )
    deactivated_at = models.DateTimeField(_("deactivated at"), null=True, blank=True)
    deactivation_source = models.CharField(_("deactivated by"), max_length=32, blank=True)

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined]  # django-stubs declares no AbstractUser.Meta
        swappable = "AUTH_USER_MODEL"
        # The leavers only (2 % of 50,000 people in seed_scale): the owner-bound control reads their ids from
        # this index instead of scanning everyone.
        indexes = [models.Index(fields=["id"], name="user_inactive_idx", condition=models.Q(is_active=False))]

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username


class TokenRight(models.TextChoices):
    """What an API token may be used for: a token holds a list of these (``ApiToken.rights``)."""

    API = "api", _("Management API, acting as the token's user")
    LOG_READ = "log:read", _("Read the audit log's checkpoint and tiles (monitors)")
    USAGE_WRITE = "usage:write", _("Report client usage (POST /api/v1/usage/, log shippers and IdP hooks)")


def default_token_rights() -> list[str]:
    return [TokenRight.API.value]


class ApiToken(models.Model):
    """A bearer token, acting as its user, for what its ``rights`` allow (``TokenRight``). Stored hashed."""

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=12, db_index=True)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    rights = models.JSONField(
        _("rights"),
        default=default_token_rights,
        help_text=_(
            'What the token may do: "api" (the management API, as its user), "log:read" (the audit '
            "log's checkpoint and tiles, whatever its user's role)."
        ),
    )

    class Meta:
        verbose_name = _("API token")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ActorType(models.TextChoices):
    USER = "user", _("User")
    AGENT = "agent", _("Agent")
    SYSTEM = "system", _("System")


class AuditEvent(models.Model):
    """One append-only audit record, and a leaf of the audit transparency log (docs/audit-log.md).

    A change's transaction inserts its event with no ``log_index``; the sequencer (``portal.tlog.sequencer``)
    later gives it the next index, appends its leaf hash to the Merkle tree and signs a checkpoint. The
    database refuses DELETE and every UPDATE except that one-time setting of ``log_index`` (triggers in the
    portal migration ``audit_log_append_only``).

    ``prev_hash``/``hash`` belong to the hash chain that preceded the log: events appended before the log
    existed keep them (the log includes them in its leaves, and ``verify_audit`` still checks them); events
    appended since have ``prev_hash=""`` and ``hash=NULL``.
    """

    id = models.BigAutoField(primary_key=True)
    occurred_at = models.DateTimeField(_("occurred at"), db_index=True)
    actor_type = models.CharField(_("actor type"), max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(_("actor id"), max_length=64, blank=True)
    actor_label = models.CharField(_("actor"), max_length=255, blank=True)
    action = models.CharField(_("action"), max_length=64)  # indexed: see Meta.indexes
    object_type = models.CharField(_("object type"), max_length=64)
    object_id = models.CharField(_("object id"), max_length=64)
    before = models.JSONField(_("before"), null=True, blank=True)
    after = models.JSONField(_("after"), null=True, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    policy_version = models.PositiveIntegerField(_("policy version"), null=True, blank=True)
    request_id = models.CharField(_("request id"), max_length=64, blank=True)
    prev_hash = models.CharField(_("previous hash (legacy chain)"), max_length=64, blank=True, default="")
    hash = models.CharField(_("hash (legacy chain)"), max_length=64, null=True, blank=True)  # unique: see Meta
    log_index = models.BigIntegerField(_("log index"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("audit event")
        ordering = ["id"]
        # Plain indexes and a unique constraint rather than db_index/unique=True: on PostgreSQL those also
        # build varchar_pattern_ops (LIKE) indexes that nothing uses and every appended event would maintain.
        indexes = [
            models.Index(fields=["object_type", "object_id", "id"], name="audit_object_idx"),
            models.Index(fields=["action"], name="audit_action_idx"),
            # What the sequencer scans and the seal lag reads: only events still waiting, so it stays small.
            models.Index(fields=["id"], condition=models.Q(log_index__isnull=True), name="audit_unsealed_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["hash"], name="audit_hash_unique"),
            models.UniqueConstraint(fields=["log_index"], name="audit_log_index_unique"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.object_type}:{self.object_id}"


class AuditHead(models.Model):
    """The last head of the hash chain that preceded the transparency log, frozen since the log took over.

    ``verify_audit`` checks that it still names the last chained event (a tail cut from the old chain).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_event_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)
    prev_hash = models.CharField(max_length=64, default="0" * 64, db_default="0" * 64)

    class Meta:
        verbose_name = _("audit chain head")
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_head_singleton")]

    def __str__(self) -> str:
        return f"audit head at #{self.last_event_id}"


class Heartbeat(models.Model):
    """When a piece of background machinery last proved it runs: a worker queue, a periodic sweep.

    ``queue:<name>`` rows are written by the heartbeat task beat sends to each queue (so a fresh row means beat,
    the broker and a worker consuming that queue all work); ``sweep:<name>`` rows by each periodic sweep, with
    how long it took. ``/readyz`` and ``/metrics`` read them; one row per name, overwritten in place.
    """

    name = models.CharField(_("name"), max_length=64)  # unique: see Meta.constraints
    beat_at = models.DateTimeField(_("last beat at"))
    duration_seconds = models.FloatField(_("duration (s)"), null=True, blank=True)
    delay_seconds = models.FloatField(
        _("queue delay (s)"),
        null=True,
        blank=True,
        help_text=_("Time between beat sending the heartbeat and a worker running it."),
    )
    host = models.CharField(_("host"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("heartbeat")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["name"], name="heartbeat_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


class LogTile(models.Model):
    """One tile of the log's Merkle tree (c2sp.org/tlog-tiles): up to 256 consecutive hashes of one level.

    Tile ``tile_index`` at ``level`` L holds the hashes of the complete subtrees of 256**L leaves numbered
    ``tile_index * 256`` onwards; the rightmost tile of a level is partial and grows as the log does (a
    trigger lets ``hashes`` only grow, never change). Tiles are derived data: ``verify_audit`` recomputes
    them from the events, and every proof read from them is checked against a signed checkpoint.
    """

    level = models.PositiveSmallIntegerField(_("level"))
    tile_index = models.BigIntegerField(_("tile index"))
    hashes = models.BinaryField(_("hashes"))

    class Meta:
        verbose_name = _("log tile")
        constraints = [models.UniqueConstraint(fields=["level", "tile_index"], name="log_tile_unique")]

    def __str__(self) -> str:
        return f"tile {self.level}/{self.tile_index} ({len(self.hashes) // 32} hashes)"


class LogCheckpoint(models.Model):
    """A signed tree head: the C2SP checkpoint of the log at ``tree_size``, as the signed note the sequencer
    wrote (and sent to the witnesses). Append-only, like the events."""

    tree_size = models.BigIntegerField(_("tree size"))
    root_hash = models.CharField(_("root hash"), max_length=64)
    note = models.TextField(_("signed note"))
    created_at = models.DateTimeField(_("created at"))

    class Meta:
        verbose_name = _("log checkpoint")
        ordering = ["tree_size"]
        constraints = [models.UniqueConstraint(fields=["tree_size"], name="log_checkpoint_size_unique")]

    def __str__(self) -> str:
        return f"checkpoint {self.tree_size}"


class LogWitnessReceipt(models.Model):
    """A checkpoint reached a witness outside the database (``REGISTRAR_LOG_WITNESS``), at ``witnessed_at``."""

    checkpoint = models.ForeignKey(
        LogCheckpoint, verbose_name=_("checkpoint"), on_delete=models.PROTECT, related_name="receipts"
    )
    witness = models.CharField(_("witness"), max_length=255)
    witnessed_at = models.DateTimeField(_("witnessed at"))

    class Meta:
        verbose_name = _("log witness receipt")
        constraints = [
            models.UniqueConstraint(fields=["witness", "checkpoint"], name="log_receipt_unique"),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.checkpoint_id} at {self.witness}"
