"""Pre-registration (docs/cimd.md): a person submits a client by hand, through the agent path's own intake.

``preregister`` takes either RFC 7591 metadata (the body an agent would POST to /oauth2/register) or the URL of
a Client ID Metadata Document, plus the governance fields Registrar decides (``purpose``, ``scope``,
``requested_ttl``, ``audiences``, ``internal_only``), and hands it to ``approvals.oauth2.register.
registration_submit`` as a ``Requester`` with ``via`` = ``pre_registration`` (metadata) or ``cimd`` (a document)
and ``submitted_by``: the same validator, the same policy version, the same queue and the same lifecycle as an
agent's registration. Who may submit is ``portal.roles.can_preregister`` (an owner for themselves, an admin for
any owner, never a service account); the submitter is a party to the request (``request_parties``), so they can
never approve it.

What is written:

- metadata the validator refuses (a ``jwks_uri`` whose keys cannot be fetched included), and a CIMD document the
  fetcher refuses (``approvals.cimd.fetch``, its keys included): nothing.
  ``PreregistrationInvalid`` says why (every problem at once); a person fixes a typo, no audit row is needed;
- a policy refusal: a ``refused`` request and its audit event, as for an agent;
- otherwise a ``pending`` request (the review queue), or an ``approved`` one and its client when the policy
  auto-approves (delivered to the IdP right after the commit, as on the agent path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from approvals.cimd.domains import trusted_domain_for
from approvals.cimd.fetch import CimdRefused, get_document, key_set
from approvals.metadata import MetadataError, validate_client_metadata
from approvals.oauth2.client_keys import keys_fetch
from approvals.oauth2.credentials import Requester
from approvals.oauth2.errors import IntakeError
from approvals.oauth2.inline_delivery import deliver_inline
from approvals.oauth2.register import Submission, registration_submit
from approvals.policy_store import active_policy
from inventory.choices import CreatedVia
from portal.audit import Actor
from portal.logs import log_event
from portal.roles import can_preregister

logger = logging.getLogger(__name__)

GOVERNANCE_FIELDS = ("purpose", "scope", "requested_ttl", "audiences", "internal_only")


class PreregistrationError(Exception):
    """Refused before anything was written. ``status`` is the HTTP status; ``error`` a stable code."""

    status = 400

    def __init__(self, error: str, description: str, *, reasons: list[str] | None = None) -> None:
        self.error = error
        self.description = description
        self.reasons = list(reasons or [description])
        super().__init__(f"{error}: {description}")


class PreregistrationForbidden(PreregistrationError):
    status = 403


class PreregistrationInvalid(PreregistrationError):
    """The metadata or the document was refused (nothing written)."""


@dataclass(frozen=True)
class Preregistration:
    """What ``preregister`` did: the request (and its client, when the policy approved it at once)."""

    submission: Submission
    delivered: bool = False

    @property
    def reg_request(self):
        return self.submission.reg_request


def _governance(governance: dict[str, Any] | None) -> dict[str, Any]:
    governance = dict(governance or {})
    unknown = sorted(set(governance) - set(GOVERNANCE_FIELDS))
    if unknown:
        raise PreregistrationInvalid("invalid_request", f"unknown governance fields: {', '.join(unknown)}")
    return {k: v for k, v in governance.items() if v is not None}


def _cimd_body(cimd_url: str, governance: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The registration body a CIMD document stands for, the request fields and the policy inputs."""
    purpose = governance.get("purpose")
    if not purpose:
        raise PreregistrationInvalid("invalid_client_metadata", "purpose is required: say what the client is for")
    try:
        fetched = get_document(cimd_url, purpose=purpose)
        key_set(fetched)  # keys behind a jwks_uri that cannot be had: refused before anything is written
    except CimdRefused as exc:
        raise PreregistrationInvalid(f"cimd_{exc.code}", exc.reason, reasons=exc.reasons) from None
    review = fetched.review
    body = review.metadata.to_response_dict()
    for name in ("requested_ttl", "audiences"):
        body.pop(name, None)
    body["internal_only"] = False
    body.update(governance)
    trusted = trusted_domain_for(review.host)
    request_fields = {"cimd_url": cimd_url, "cimd_sha256": fetched.sha256, "cimd_document": fetched.document}
    policy_inputs = {
        "cimd_host": review.host,
        "cimd_trusted_domain": trusted.domain if trusted is not None else None,
        "cimd_trusted_subdomains": trusted.include_subdomains if trusted is not None else True,
    }
    return body, request_fields, policy_inputs


def preregister(
    *,
    submitter,
    owner=None,
    metadata: dict[str, Any] | None = None,
    cimd_url: str | None = None,
    governance: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> Preregistration:
    """Submit one client by hand (module docstring). Exactly one of ``metadata`` and ``cimd_url``.

    Raises PreregistrationForbidden (may not submit for that owner) or PreregistrationInvalid (nothing written).
    """
    owner = owner if owner is not None else submitter
    if not can_preregister(submitter, owner):
        if owner.pk != submitter.pk:
            raise PreregistrationForbidden("forbidden", "only an admin may pre-register a client for another owner")
        raise PreregistrationForbidden("forbidden", "only owners and admins may pre-register clients")
    if (metadata is None) == (cimd_url is None):
        raise PreregistrationInvalid("invalid_request", "give either metadata or cimd_url, not both or neither")
    fields = _governance(governance)
    request_fields: dict[str, Any] = {"submitted_by": submitter}
    policy_inputs: dict[str, Any] = {}
    if cimd_url is not None:
        if not isinstance(cimd_url, str):
            raise PreregistrationInvalid("cimd_url", "cimd_url must be a string")
        via = CreatedVia.CIMD
        body, cimd_fields, policy_inputs = _cimd_body(cimd_url.strip(), fields)
        request_fields.update(cimd_fields)
    else:
        if not isinstance(metadata, dict):
            raise PreregistrationInvalid("invalid_client_metadata", "the metadata must be a JSON object")
        via = CreatedVia.PRE_REGISTRATION
        body = {k: v for k, v in metadata.items() if k != "software_statement"} | fields
        try:  # the agent API's validator; refused here so a person's typo writes nothing
            md = validate_client_metadata(body, allow_shared_secret=active_policy().allow_shared_secret)
        except MetadataError as exc:
            raise PreregistrationInvalid(exc.error, exc.description, reasons=exc.reasons) from None
        if md.jwks_uri is not None:  # and keys that cannot be had (fetched again by the intake: a rare path)
            try:
                keys_fetch(md.jwks_uri)
            except IntakeError as exc:
                raise PreregistrationInvalid(exc.error, exc.description) from None

    requester = Requester(
        via=via,
        owner=owner,
        actor=Actor.user(submitter),
        audit_fields={"submitted_by": submitter.get_username(), **({"cimd_url": cimd_url} if cimd_url else {})},
        request_fields=request_fields,
        policy_inputs=policy_inputs,
        public_web_clients=via == CreatedVia.CIMD,
    )
    try:
        submission = registration_submit(requester=requester, body=body, source_ip=source_ip)
    except IntakeError as exc:
        error = PreregistrationError(exc.error, exc.description)
        error.status = exc.status  # 503 when no identity provider is configured
        raise error from None
    delivered = False
    if submission.client is not None:
        delivered = deliver_inline(submission.client)
    log_event(
        logger,
        "preregistered",
        registration=submission.reg_request.public_id,
        via=via,
        state=submission.reg_request.state,
        submitted_by=submitter.get_username(),
        owner=owner.get_username(),
    )
    return Preregistration(submission=submission, delivered=delivered)


__all__ = [
    "GOVERNANCE_FIELDS",
    "Preregistration",
    "PreregistrationError",
    "PreregistrationForbidden",
    "PreregistrationInvalid",
    "preregister",
]
