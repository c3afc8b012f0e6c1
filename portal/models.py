"""Shared kernel models: people, API tokens and the tamper-evident audit chain."""

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

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username


class ApiToken(models.Model):
    """A bearer token for the management API (``/api/v1``), acting as its user. Stored hashed."""

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=12, db_index=True)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ActorType(models.TextChoices):
    USER = "user", _("User")
    AGENT = "agent", _("Agent")
    SYSTEM = "system", _("System")


class AuditEvent(models.Model):
    """One append-only, hash-chained audit record.

    ``prev_hash`` is the ``hash`` of the event before it (64 zeros for the first) and ``hash`` the
    SHA-256 of this event's canonical JSON (which includes ``prev_hash``). The database refuses
    UPDATE and DELETE on this table (triggers in migration 0002); ``verify_audit`` re-computes the chain.
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
    prev_hash = models.CharField(_("previous hash"), max_length=64)
    hash = models.CharField(_("hash"), max_length=64)  # unique: see Meta.constraints

    class Meta:
        verbose_name = _("audit event")
        ordering = ["id"]
        # Plain indexes and a unique constraint rather than db_index/unique=True: on PostgreSQL those also
        # build varchar_pattern_ops (LIKE) indexes that nothing uses and every appended event would maintain.
        indexes = [
            models.Index(fields=["object_type", "object_id", "id"], name="audit_object_idx"),
            models.Index(fields=["action"], name="audit_action_idx"),
        ]
        constraints = [models.UniqueConstraint(fields=["hash"], name="audit_hash_unique")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.object_type}:{self.object_id}"


class AuditHead(models.Model):
    """Single row pointing at the chain's last event; its row lock serialises appends.

    ``prev_hash`` is the hash before ``last_hash``: a single-statement append (``portal.audit.chained_insert``)
    moves the head and reads the previous hash back from the same row, in one ``RETURNING``.
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
    delay_seconds = models.FloatField(_("queue delay (s)"), null=True, blank=True,
                                      help_text=_("Time between beat sending the heartbeat and a worker running it."))
    host = models.CharField(_("host"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("heartbeat")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["name"], name="heartbeat_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
