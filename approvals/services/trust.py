"""Services for what Django admin configures about trust — trusted issuers (software statements, RFC 7591
§2.3) and trusted CIMD domains (docs/cimd.md) — used by /api/v1/trusted-issuers/ and
/api/v1/trusted-cimd-domains/. Each write validates as the admin form does (the model's ``full_clean``: for a
domain, its ``clean`` lower-cases it and refuses what is not a bare DNS name), runs in one transaction and
records one ``trusted_issuer.admin_*`` / ``trusted_cimd_domain.admin_*`` event, the admin's names and
before/after (``portal.auditedadmin.save_audited``). A change that changes nothing records nothing."""

from __future__ import annotations

from typing import Any

from approvals.models import TrustedCimdDomain, TrustedIssuer
from portal.audit import Actor
from portal.auditedadmin import save_audited


def trusted_issuer_save(issuer: TrustedIssuer | None, *, actor: Actor, changes: dict[str, Any]) -> TrustedIssuer:
    """Add a trusted issuer (``issuer`` None) or change one (``enabled=False`` deactivates it)."""
    return save_audited(issuer or TrustedIssuer(), actor=actor, object_type="trusted_issuer", changes=changes)


def trusted_cimd_domain_save(
    domain: TrustedCimdDomain | None, *, actor: Actor, changes: dict[str, Any]
) -> TrustedCimdDomain:
    """Trust a CIMD domain (``domain`` None) or change one (``enabled=False`` deactivates it)."""
    return save_audited(domain or TrustedCimdDomain(), actor=actor, object_type="trusted_cimd_domain", changes=changes)
