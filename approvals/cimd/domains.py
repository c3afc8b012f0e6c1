"""Trusted CIMD domains (reads): which trusted domain, if any, covers a document's host (docs/cimd.md)."""

from __future__ import annotations

import re

from approvals.policy import domain_covers

# A DNS name of at least two labels: letters, digits and hyphens, no label starting or ending with a hyphen.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})+")


def domain_problem(domain: str) -> str | None:
    """Why ``domain`` (lower case, no trailing dot) cannot be a trusted domain, or None."""
    if not domain:
        return "a domain is required"
    if len(domain) > 253:
        return "a domain is at most 253 characters long"
    if not _DOMAIN.fullmatch(domain):
        return "enter a DNS name such as example.com (no scheme, port, path, wildcard or IP address)"
    if domain.replace(".", "").isdigit():
        return "an IP address cannot be a trusted domain"
    return None


def trusted_domain_for(host: str):
    """The enabled TrustedCimdDomain covering ``host`` — the most specific when several do — or None."""
    from approvals.models import TrustedCimdDomain

    host = (host or "").lower().rstrip(".")
    if not host:
        return None
    labels = host.split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    rows = TrustedCimdDomain.objects.filter(enabled=True, domain__in=candidates)
    best = None
    for row in rows:
        if domain_covers(row.domain, host, include_subdomains=row.include_subdomains) and (
            best is None or len(row.domain) > len(best.domain)
        ):
            best = row
    return best


__all__ = ["domain_problem", "trusted_domain_for"]
