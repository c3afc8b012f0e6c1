"""States, tiers and other vocabularies of the inventory, with the allowed lifecycle transitions."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Sensitivity(models.TextChoices):
    LOW = "low", _("Low")
    MEDIUM = "medium", _("Medium")
    HIGH = "high", _("High")


class ScopeCategory(models.TextChoices):
    INTERNAL_TOOL = "internal_tool", _("Internal tool")
    SAAS_API = "saas_api", _("SaaS API")
    SOURCE_CONTROL = "source_control", _("Source control")
    PRODUCTION_DATA = "production_data", _("Production data")
    IDENTITY_ADMIN = "identity_admin", _("Identity admin")
    OTHER = "other", _("Other")


class RiskTier(models.TextChoices):
    LOW = "low", _("Low")
    MEDIUM = "medium", _("Medium")
    HIGH = "high", _("High")


TIER_RANK = {RiskTier.LOW: 0, RiskTier.MEDIUM: 1, RiskTier.HIGH: 2}


class ClientState(models.TextChoices):
    PROVISIONING = "provisioning", _("Provisioning")
    ACTIVE = "active", _("Active")
    SUSPENDED = "suspended", _("Suspended")
    EXPIRED = "expired", _("Expired")
    RETIRED = "retired", _("Retired")
    REVOKED = "revoked", _("Revoked")
    DEPROVISIONED = "deprovisioned", _("Deprovisioned")


# The only legal moves. Anything else raises IllegalTransition (inventory.lifecycle).
CLIENT_TRANSITIONS: dict[str, frozenset[str]] = {
    # provisioning -> suspended: a hold (break glass, containment) reaches a client still being created;
    # its DISABLE is delivered after the CREATE, so it never works at the IdP.
    ClientState.PROVISIONING: frozenset(
        {ClientState.ACTIVE, ClientState.SUSPENDED, ClientState.RETIRED, ClientState.REVOKED}
    ),
    ClientState.ACTIVE: frozenset(
        {ClientState.SUSPENDED, ClientState.EXPIRED, ClientState.RETIRED, ClientState.REVOKED}
    ),
    ClientState.SUSPENDED: frozenset(
        {ClientState.ACTIVE, ClientState.EXPIRED, ClientState.RETIRED, ClientState.REVOKED}
    ),
    ClientState.EXPIRED: frozenset({ClientState.DEPROVISIONED}),
    ClientState.RETIRED: frozenset({ClientState.DEPROVISIONED}),
    ClientState.REVOKED: frozenset({ClientState.DEPROVISIONED}),
    ClientState.DEPROVISIONED: frozenset(),
}

# Live clients still hold (or are about to hold) credentials at the IdP.
LIVE_STATES = frozenset({ClientState.PROVISIONING, ClientState.ACTIVE, ClientState.SUSPENDED})
# Ended clients must be gone (or disabled) at the IdP.
ENDED_STATES = frozenset({ClientState.EXPIRED, ClientState.RETIRED, ClientState.REVOKED, ClientState.DEPROVISIONED})


class HoldKind(models.TextChoices):
    """Why security or an admin suspended a client. A held client cannot become active until security
    or an admin lifts the hold (``inventory.containment.client_hold_lift``); its owner cannot resume it."""

    BREAK_GLASS = "break_glass", _("Break glass")
    SECURITY = "security", _("Security hold")
    ADMIN = "admin", _("Admin suspension")
    POLICY = "policy", _("Policy enforcement")
    CONTAINMENT = "containment", _("Containment (an ancestor is held)")


class CreatedVia(models.TextChoices):
    TOKEN = "token", _("Initial access token")
    SOFTWARE_STATEMENT = "software_statement", _("Software statement")
    SPAWN = "spawn", _("Spawned by parent")
    ADMIN = "admin", _("Admin")
    DISCOVERED = "discovered", _("Discovered at IdP (unmanaged)")
    PRE_REGISTRATION = "pre_registration", _("Pre-registered (metadata)")
    CIMD = "cimd", _("Pre-registered (Client ID Metadata Document)")
    ANONYMOUS = "anonymous", _("Anonymous/MCP (anonymous registration profile)")


class IdPKind(models.TextChoices):
    RFC7591 = "rfc7591", _("Generic RFC 7591/7592")
    KEYCLOAK = "keycloak", _("Keycloak")
    DRY_RUN = "dry-run", _("Dry-run (records only)")


class OutboxOperation(models.TextChoices):
    CREATE = "create", _("Create")
    UPDATE = "update", _("Update")
    DISABLE = "disable", _("Disable")
    DELETE = "delete", _("Delete")


class OutboxStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    DONE = "done", _("Delivered")
    DEAD = "dead", _("Dead-lettered")
    SUPERSEDED = "superseded", _("Superseded")
    RESOLVED = "resolved", _("Resolved by a person")
