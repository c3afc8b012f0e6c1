"""Vocabularies of intake and decisions."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class RequestState(models.TextChoices):
    PENDING = "pending", _("Pending review")
    APPROVED = "approved", _("Approved")
    DENIED = "denied", _("Denied")
    WITHDRAWN = "withdrawn", _("Withdrawn")
    LAPSED = "lapsed", _("Lapsed")
    REFUSED = "refused", _("Refused by policy")


REQUEST_TRANSITIONS: dict[str, frozenset[str]] = {
    RequestState.PENDING: frozenset(
        {RequestState.APPROVED, RequestState.DENIED, RequestState.WITHDRAWN, RequestState.LAPSED}
    ),
    RequestState.APPROVED: frozenset(),
    RequestState.DENIED: frozenset(),
    RequestState.WITHDRAWN: frozenset(),
    RequestState.LAPSED: frozenset(),
    RequestState.REFUSED: frozenset(),
}


class RequestKind(models.TextChoices):
    REGISTRATION = "registration", _("New registration")
    RENEWAL = "renewal", _("Renewal")
    # A pinned Client ID Metadata Document changed in a way that widens the client (approvals.cimd.pinning).
    CIMD_CHANGE = "cimd_change", _("Metadata document change")
    # A shadow client found at the IdP brought under Registrar: its Client row is the request's ``client``
    # (approvals.preregistration, docs/cimd.md "Adopting shadow clients").
    ADOPTION = "adoption", _("Adoption of a shadow client")


class PolicyOutcome(models.TextChoices):
    """What the policy decided for a registration (``approvals.policy.OUTCOME_*``)."""

    AUTO_APPROVE = "auto_approve", _("Auto-approved")
    REVIEW = "review", _("Needs review")
    REFUSE = "refuse", _("Refused")


class DecisionKind(models.TextChoices):
    APPROVE = "approve", _("Approve")
    DENY = "deny", _("Deny")


class IssuerKind(models.TextChoices):
    OIDC = "oidc", _("OIDC issuer")
    SPIFFE = "spiffe", _("SPIFFE trust domain")
