"""The rules of an anonymous registration profile, as a pure function (part of the policy engine).

An anonymous registration carries no credential, so the admin's profile (``approvals.models.AnonymousProfile``)
says what shape of software may register that way. ``approvals.policy.evaluate`` applies these rules to
``via="anonymous"`` registrations; every broken rule is a refusal whose reason code names it:

- ``anonymous_public_client_required`` — ``token_endpoint_auth_method`` must be ``none`` (a public client with
  PKCE: software anyone can download cannot keep a secret, and no key was vetted for it);
- ``anonymous_grant_type`` — grant types only ``authorization_code`` (required) and ``refresh_token``; response
  types only ``code``;
- ``anonymous_redirect_not_allowed`` — at least one redirect URI, each on a loopback host (when the profile
  allows it) or on one of the profile's domains;
- ``anonymous_application_type`` — ``application_type`` one of the profile's.

Scopes (the profile's list is the ceiling: ``scope_above_ceiling``) and lifetime (the profile's maximum: a clamp)
are the policy's usual ceiling rules. This module imports nothing from the database or Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

ANONYMOUS_CODES: dict[str, str] = {
    "anonymous_public_client_required": "refusal",
    "anonymous_grant_type": "refusal",
    "anonymous_redirect_not_allowed": "refusal",
    "anonymous_application_type": "refusal",
}
ALLOWED_GRANTS = frozenset({"authorization_code", "refresh_token"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class AnonymousRules:
    """What one profile allows (copied from the model, so the policy stays pure)."""

    profile: str
    allow_loopback: bool = True
    redirect_domains: tuple[str, ...] = ()
    application_types: tuple[str, ...] = ("native", "web")


def _covers(domain: str, host: str) -> bool:
    domain, host = domain.lower().rstrip("."), host.lower().rstrip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def anonymous_problems(
    rules: AnonymousRules,
    *,
    token_endpoint_auth_method: str,
    grant_types: tuple[str, ...],
    response_types: tuple[str, ...],
    redirect_uris: tuple[str, ...],
    application_type: str,
) -> list[tuple[str, str]]:
    """(code, message) for every rule of the profile the registration breaks."""
    name = f"the anonymous registration profile {rules.profile!r}"
    out: list[tuple[str, str]] = []
    if token_endpoint_auth_method != "none":
        out.append(
            (
                "anonymous_public_client_required",
                f"{name} admits public clients only: token_endpoint_auth_method must be none (with PKCE), "
                f"got {token_endpoint_auth_method!r}",
            )
        )
    extra = sorted(set(grant_types) - ALLOWED_GRANTS)
    if extra or "authorization_code" not in grant_types or set(response_types) - {"code"}:
        out.append(
            (
                "anonymous_grant_type",
                f"{name} admits grant_types authorization_code (+ refresh_token) and response_types code only, "
                f"got grant_types {', '.join(grant_types) or 'none'} and response_types "
                f"{', '.join(response_types) or 'none'}",
            )
        )
    if not redirect_uris:
        out.append(("anonymous_redirect_not_allowed", f"{name} requires at least one redirect URI"))
    for uri in redirect_uris:
        try:
            host = urlsplit(uri).hostname or ""
        except ValueError:
            host = ""
        if host in _LOOPBACK and rules.allow_loopback:
            continue
        if any(_covers(domain, host) for domain in rules.redirect_domains):
            continue
        where = ["a loopback host"] if rules.allow_loopback else []
        where += [", ".join(rules.redirect_domains)] if rules.redirect_domains else []
        out.append(
            (
                "anonymous_redirect_not_allowed",
                f"{name} admits redirect URIs on {' or '.join(where) or 'no host'} only, got {uri[:120]!r}",
            )
        )
    if application_type not in rules.application_types:
        out.append(
            (
                "anonymous_application_type",
                f"{name} admits application_type {' or '.join(rules.application_types) or 'none'}, "
                f"got {application_type!r}",
            )
        )
    return out
