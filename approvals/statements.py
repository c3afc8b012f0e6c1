"""Software statements (RFC 7591 §2.3): verify a workload's signed JWT and map it to a TrustedIssuer rule.

A statement is accepted when an enabled ``TrustedIssuer`` rule knows its issuer and its subject, its
signature verifies against that rule's configured JWKS (asymmetric algorithms only), its ``aud`` contains
the rule's audience, and ``exp``/``iat`` are present and current (60 s leeway for clock skew).

A statement is a bearer credential, so it must be short-lived and usable once:

- its life is bounded by the policy's ``max_statement_lifetime_seconds`` (default 3600): both ``exp - iat``
  and ``exp - now`` must be within it (the latter with the leeway);
- it must carry a ``jti``, and a ``jti`` is accepted ONCE per issuer. ``verify_software_statement`` refuses a
  ``jti`` already on record (the cheap, early answer); the guarantee is a unique constraint on
  ``SoftwareStatementUse`` (issuer, jti), whose row ``approvals.oauth2.credential_use`` writes in the same statement as the
  accepted or pending registration, so of concurrent registrations with one statement exactly one gets in.
  A refused registration does not use the ``jti`` (like an initial access token's use): the workload can fix
  its metadata and retry with the same statement while it lives. Rows are purged once the statement has
  expired (``statement_uses_purge``, a beat task and the ``purge_statement_uses`` command): an expired
  statement is refused anyway.

Issuer matching:

- ``oidc`` rules: ``iss`` equals ``TrustedIssuer.issuer``; the rule's ``subject`` matches ``sub``.
- ``spiffe`` rules (JWT-SVIDs): ``sub`` is a SPIFFE ID ``spiffe://<trust domain>/<path>``; the rule's
  ``issuer`` names the trust domain (``example.org`` or ``spiffe://example.org``); ``iss`` is optional.

A rule's ``subject`` is exact, or a prefix when it ends with ``*``. When several rules match, an exact rule
beats any prefix and a longer prefix beats a shorter one.

Errors follow RFC 7591 §3.2.2: ``unapproved_software_statement`` when the statement may be genuine but is
not trusted here (unknown issuer, subject outside every rule), ``invalid_software_statement`` when it is
malformed, badly signed, expired or for another audience.

The statement's client metadata claims take precedence over the same fields in the JSON body
(``merge_statement``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import ClaimsOption

from approvals.choices import IssuerKind
from approvals.models import SoftwareStatementUse, TrustedIssuer
from portal import jsonbody

LEEWAY_SECONDS = 60
MAX_STATEMENT_BYTES = 16 * 1024
MAX_JTI_BYTES = 255
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# JWT claims that describe the statement itself, not the client (RFC 7519 §4.1).
JWT_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti"})
# Body fields a statement may never set: they are about the credential, not the client.
NOT_FROM_STATEMENT = frozenset({"software_statement"})


class StatementError(Exception):
    """The software statement was refused. ``error`` is the RFC 7591 code."""

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}")


def _invalid(description: str) -> StatementError:
    return StatementError("invalid_software_statement", description)


def _unapproved(description: str) -> StatementError:
    return StatementError("unapproved_software_statement", description)


@dataclass(frozen=True)
class VerifiedStatement:
    issuer: TrustedIssuer
    subject: str
    claims: dict[str, Any]

    @property
    def jti(self) -> str:
        return self.claims["jti"]

    @property
    def issuer_key(self) -> str:
        """Who assigned the ``jti`` (its uniqueness is per issuer): the OIDC ``iss``, or the SPIFFE trust domain
        as ``spiffe://<domain>``. Not the rule: a new, more specific rule must not make a used ``jti`` new again."""
        if self.issuer.kind == IssuerKind.SPIFFE:
            return f"spiffe://{spiffe_trust_domain(self.subject)}"
        return self.issuer.issuer

    @property
    def expires_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.claims["exp"], tz=dt.UTC)

    def use(self, *, registration_id: str, now: dt.datetime) -> SoftwareStatementUse:
        """The row that records this statement's ``jti`` as used by ``registration_id`` (written by the intake)."""
        return SoftwareStatementUse(
            issuer=self.issuer_key,
            jti=self.jti,
            expires_at=self.expires_at,
            registration_id=registration_id,
            used_at=now,
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The client metadata the statement asserts (everything but the JWT's own claims)."""
        return {k: v for k, v in self.claims.items() if k not in JWT_CLAIMS and k not in NOT_FROM_STATEMENT}


def merge_statement(body: dict[str, Any], statement: VerifiedStatement) -> dict[str, Any]:
    """The body with the statement's values taking precedence (RFC 7591 §2.3), and the rule's purpose."""
    merged = {k: v for k, v in body.items() if k != "software_statement"}
    merged.update(statement.metadata)
    # The rule maps this workload to one purpose; neither the body nor the workload picks another.
    merged["purpose"] = statement.issuer.purpose
    return merged


def _b64json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, binascii.Error):
        raise _invalid("software_statement is not a JWT (undecodable header or payload)")
    try:
        # I-JSON, like a request body: the claims end up in the request row and the audit chain
        return jsonbody.loads(raw)
    except ValueError as exc:
        raise _invalid(f"software_statement is not a JWT (its header or payload is not valid JSON: {exc})")


def _peek(statement: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims WITHOUT verification: only used to find which issuer's keys to verify with."""
    parts = statement.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise _invalid("software_statement must be a signed JWT (three dot-separated parts)")
    header, claims = _b64json(parts[0]), _b64json(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _invalid("software_statement header and payload must be JSON objects")
    return header, claims


def spiffe_trust_domain(spiffe_id: str) -> str | None:
    """``example.org`` for ``spiffe://example.org/ns/ci/sa/agent``; None if it is not a SPIFFE ID."""
    if not spiffe_id.startswith("spiffe://"):
        return None
    domain, _, path = spiffe_id.removeprefix("spiffe://").partition("/")
    if not domain or not path or any(c.isspace() for c in spiffe_id) or "?" in spiffe_id or "#" in spiffe_id:
        return None
    return domain.lower()


def subject_matches(rule: str, subject: str) -> bool:
    if rule.endswith("*"):
        return subject.startswith(rule[:-1])
    return subject == rule


def _rule_rank(rule: TrustedIssuer) -> tuple[int, int]:
    # Exact rules first, then the most specific prefix.
    return (0, 0) if not rule.subject.endswith("*") else (1, -len(rule.subject))


def _candidates(iss: Any, sub: str) -> list[TrustedIssuer]:
    query = Q()
    if isinstance(iss, str) and iss:
        query |= Q(kind=IssuerKind.OIDC, issuer=iss)
    domain = spiffe_trust_domain(sub)
    if domain:
        query |= Q(kind=IssuerKind.SPIFFE, issuer__in=[domain, f"spiffe://{domain}"])
    if not query:
        return []
    return list(TrustedIssuer.objects.filter(query, enabled=True).select_related("owner", "team", "idp"))


def verify_software_statement(
    statement: Any, *, now: int | None = None, max_lifetime: int | None = None
) -> VerifiedStatement:
    """Verify ``statement`` and return its rule and claims, or raise StatementError.

    ``max_lifetime`` (seconds) defaults to the active policy's ``max_statement_lifetime_seconds``.
    """
    if not isinstance(statement, str) or not statement:
        raise _invalid("software_statement must be a JWT string")
    if len(statement) > MAX_STATEMENT_BYTES:
        raise _invalid(f"software_statement is longer than {MAX_STATEMENT_BYTES} bytes")
    header, unverified = _peek(statement)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _invalid(f"software_statement alg {alg!r} is not accepted; use one of {', '.join(ALGORITHMS)}")
    sub = unverified.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _invalid("software_statement has no sub (subject) claim")

    candidates = _candidates(unverified.get("iss"), sub)
    if not candidates:
        shown = unverified.get("iss") or spiffe_trust_domain(sub) or "(none)"
        raise _unapproved(f"software statement issuer {str(shown)[:200]!r} is not a trusted issuer")
    matching = sorted((r for r in candidates if subject_matches(r.subject, sub)), key=_rule_rank)
    if not matching:
        raise _unapproved(f"subject {sub[:200]!r} is not allowed by any trusted issuer rule for this issuer")
    rule = matching[0]

    try:
        keys = KeySet.import_key_set(rule.jwks)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        # The admin stored a broken JWKS: nobody can register through this rule until it is fixed.
        raise _unapproved(f"trusted issuer {rule.name!r} has no usable JWKS ({type(exc).__name__})")
    try:
        token = jwt.decode(statement, keys, algorithms=list(ALGORITHMS))
    except JoseError as exc:
        raise _invalid(f"software statement signature does not verify ({exc.error})")
    except (ValueError, TypeError):
        raise _invalid("software statement could not be decoded")

    claims = token.claims
    current = int(time.time()) if now is None else now
    registry = jwt.JWTClaimsRegistry(
        now=current,
        leeway=LEEWAY_SECONDS,
        sub={"essential": True, "value": sub},
        aud={"essential": True, "value": rule.audience},
        exp={"essential": True},
        iat={"essential": True},
        **({"iss": ClaimsOption(essential=True, value=rule.issuer)} if rule.kind == IssuerKind.OIDC else {}),
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise _invalid(f"software statement claims rejected: {exc.description or exc.error}")
    if not isinstance(claims.get("exp"), int | float) or not isinstance(claims.get("iat"), int | float):
        raise _invalid("software statement exp and iat must be numbers")
    if claims["iat"] > current + LEEWAY_SECONDS:
        raise _invalid("software statement iat is in the future")
    if rule.kind == IssuerKind.SPIFFE and spiffe_trust_domain(sub) is None:
        raise _invalid("software statement sub is not a SPIFFE ID")
    if max_lifetime is None:
        from approvals.policy_store import active_policy

        max_lifetime = active_policy().max_statement_lifetime_seconds
    _check_lifetime(claims, current, max_lifetime)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti.strip():
        raise _invalid(
            "software statement has no jti claim; each statement needs a unique jti, as it is accepted only once"
        )
    if len(jti.encode()) > MAX_JTI_BYTES or not jti.isprintable():
        raise _invalid(f"software statement jti must be printable and at most {MAX_JTI_BYTES} bytes long")
    verified = VerifiedStatement(issuer=rule, subject=sub, claims=dict(claims))
    if SoftwareStatementUse.objects.filter(issuer=verified.issuer_key, jti=jti).exists():
        raise replayed(verified)
    return verified


def _check_lifetime(claims: dict[str, Any], current: int, max_lifetime: int) -> None:
    lifetime = claims["exp"] - claims["iat"]
    if lifetime > max_lifetime:
        raise _invalid(
            f"software statement lives {int(lifetime)} s (exp - iat); at most {max_lifetime} s are "
            "accepted: issue short-lived statements"
        )
    remaining = claims["exp"] - current
    if remaining > max_lifetime + LEEWAY_SECONDS:
        raise _invalid(f"software statement expires in {int(remaining)} s; at most {max_lifetime} s ahead are accepted")


def replayed(statement: VerifiedStatement) -> StatementError:
    """The refusal of a statement whose ``jti`` was already used (by an accepted or pending registration)."""
    return _invalid(
        f"software statement jti {statement.jti[:100]!r} of issuer {statement.issuer_key[:200]!r} was "
        "already used; a statement is accepted once: get a new one from your issuer"
    )


def statement_uses_purge(*, now: dt.datetime | None = None) -> int:
    """Delete the records of statements that have expired (past ``exp`` and the leeway): they can no longer
    verify, so their ``jti`` cannot be replayed. Returns how many were deleted."""
    from django.utils import timezone

    cutoff = (now or timezone.now()) - dt.timedelta(seconds=LEEWAY_SECONDS)
    deleted, _ = SoftwareStatementUse.objects.filter(expires_at__lt=cutoff).delete()
    return deleted
