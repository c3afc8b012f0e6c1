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

from django.db import IntegrityError, transaction

from approvals.choices import RequestKind, RequestState
from approvals.cimd.domains import trusted_domain_for
from approvals.cimd.fetch import CimdRefused, get_document, key_set
from approvals.metadata import MetadataError, validate_client_metadata
from approvals.models import RegistrationRequest
from approvals.oauth2.client_keys import keys_fetch
from approvals.oauth2.credentials import Requester
from approvals.oauth2.errors import IntakeError
from approvals.oauth2.inline_delivery import deliver_inline
from approvals.oauth2.register import Submission, registration_submit
from approvals.policy_store import active_policy
from inventory.choices import CreatedVia
from inventory.models import Client
from inventory.services import adoptable_problem
from portal.audit import Actor
from portal.logs import log_event
from portal.roles import can_adopt, can_preregister

logger = logging.getLogger(__name__)

GOVERNANCE_FIELDS = ("purpose", "scope", "requested_ttl", "audiences", "internal_only")
# What an IdP reports about a client that is not client metadata a person submits (ids, secrets, RFC 7592).
_IDP_ONLY_FIELDS = frozenset(
    {
        "client_id",
        "client_secret",
        "client_secret_expires_at",
        "client_id_issued_at",
        "registration_access_token",
        "registration_client_uri",
        "registrar_id",
    }
)


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


def adoption_metadata(client: Client) -> dict[str, Any]:
    """The client metadata to prefill an adoption with: what the IdP reported, without ids and secrets."""
    reported = client.metadata if isinstance(client.metadata, dict) else {}
    metadata = {k: v for k, v in reported.items() if k not in _IDP_ONLY_FIELDS}
    if not metadata.get("client_name"):
        metadata["client_name"] = client.name
    if client.scopes and not metadata.get("scope"):
        metadata["scope"] = " ".join(client.scopes)
    return metadata


def adoption_pending(client: Client) -> RegistrationRequest | None:
    """The adoption of ``client`` waiting for review, if any."""
    return RegistrationRequest.objects.filter(
        client=client, kind=RequestKind.ADOPTION, state=RequestState.PENDING
    ).first()


def _check_adoptable(client: Client) -> None:
    problem = adoptable_problem(client)
    if problem is not None:
        raise PreregistrationInvalid("not_adoptable", problem)
    waiting = adoption_pending(client)
    if waiting is not None:
        raise PreregistrationInvalid(
            "adoption_pending", f"the adoption {waiting.public_id} of {client.registration_id} already waits for review"
        )


def preregister(
    *,
    submitter,
    owner=None,
    metadata: dict[str, Any] | None = None,
    cimd_url: str | None = None,
    governance: dict[str, Any] | None = None,
    source_ip: str | None = None,
    adopt: Client | None = None,
    dcr_move: bool = False,
) -> Preregistration:
    """Submit one client by hand (module docstring). Exactly one of ``metadata`` and ``cimd_url``.

    ``adopt``: a shadow client found at the IdP (``managed=False``) that this request proposes to bring under
    Registrar (security or an admin; ``portal.roles.can_adopt``). The metadata defaults to what the IdP reported
    (``adoption_metadata``); the request (``kind`` adoption, ``client`` the shadow) is always reviewed, and once
    approved the same client becomes managed, updated at the IdP in place. A client already managed, ended, or
    with an adoption already waiting is refused (PreregistrationInvalid, nothing written).

    ``dcr_move``: "Move to pre-registration/CIMD" on the DCR-debt page (``approvals.dcr_debt``): security or an
    admin submits, for the owner of a group of dynamically registered clients, the one governed client that
    replaces them (``portal.roles.can_adopt``); the owner must be an active person.

    Raises PreregistrationForbidden (may not submit for that owner) or PreregistrationInvalid (nothing written).
    """
    if adopt is not None:
        return _adopt(
            submitter=submitter,
            owner=owner,
            client=adopt,
            metadata=metadata,
            cimd_url=cimd_url,
            governance=governance,
            source_ip=source_ip,
        )
    owner = owner if owner is not None else submitter
    if dcr_move:
        if not can_adopt(submitter):
            raise PreregistrationForbidden("forbidden", "only security and admins may move DCR clients")
        if getattr(owner, "is_service_account", False) or not owner.is_active:
            raise PreregistrationInvalid("invalid_owner", "the owner of the replacing client must be an active person")
    elif not can_preregister(submitter, owner):
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
        _validated(body)

    return _submit(
        submitter=submitter,
        owner=owner,
        via=via,
        body=body,
        cimd_url=cimd_url,
        request_fields=request_fields,
        policy_inputs=policy_inputs,
        source_ip=source_ip,
    )


def _validated(body: dict[str, Any]) -> None:
    """The agent API's validator and the keys behind a jwks_uri: refused here so a person's typo writes nothing."""
    try:
        md = validate_client_metadata(body, allow_shared_secret=active_policy().allow_shared_secret)
    except MetadataError as exc:
        raise PreregistrationInvalid(exc.error, exc.description, reasons=exc.reasons) from None
    if md.jwks_uri is not None:  # fetched again by the intake: a rare path
        try:
            keys_fetch(md.jwks_uri)
        except IntakeError as exc:
            raise PreregistrationInvalid(exc.error, exc.description) from None


def _adopt(*, submitter, owner, client: Client, metadata, cimd_url, governance, source_ip) -> Preregistration:
    if not can_adopt(submitter):
        raise PreregistrationForbidden("forbidden", "only security and admins may adopt a shadow client")
    owner = owner if owner is not None else submitter
    if getattr(owner, "is_service_account", False) or not owner.is_active:
        raise PreregistrationInvalid("invalid_owner", "the owner of an adopted client must be an active person")
    if cimd_url is not None:
        raise PreregistrationInvalid("invalid_request", "an adoption takes client metadata, not a cimd_url")
    fields = _governance(governance)
    if not fields.get("purpose"):
        raise PreregistrationInvalid("invalid_client_metadata", "purpose is required: say what the client is for")
    if metadata is None:
        metadata = adoption_metadata(client)
    if not isinstance(metadata, dict):
        raise PreregistrationInvalid("invalid_client_metadata", "the metadata must be a JSON object")
    body = {k: v for k, v in metadata.items() if k not in _IDP_ONLY_FIELDS and k != "software_statement"} | fields
    _check_adoptable(client)
    _validated(body)
    try:
        with transaction.atomic():
            locked = Client.objects.select_for_update().get(pk=client.pk)
            _check_adoptable(locked)  # again under the lock: a concurrent adoption or change is seen here
            done = _submit(
                submitter=submitter,
                owner=owner,
                via=CreatedVia.PRE_REGISTRATION,
                body=body,
                cimd_url=None,
                request_fields={"submitted_by": submitter, "kind": RequestKind.ADOPTION, "client": locked},
                policy_inputs={"adopts_shadow": True},
                source_ip=source_ip,
                audit_fields={"adopts": locked.registration_id, "idp_client_id": locked.idp_client_id},
                idp=locked.idp,  # the IdP that holds it, whichever is the default for new clients
            )
            if done.submission.client is not None:  # the policy never auto-approves an adoption
                raise RuntimeError("an adoption was approved without review")
    except IntegrityError:  # request_one_pending_adoption: another adoption got in first
        raise PreregistrationInvalid(
            "adoption_pending", f"an adoption of {client.registration_id} already waits for review"
        ) from None
    return done


def _submit(
    *,
    submitter,
    owner,
    via: str,
    body: dict[str, Any],
    cimd_url: str | None,
    request_fields: dict[str, Any],
    policy_inputs: dict[str, Any],
    source_ip: str | None,
    audit_fields: dict[str, Any] | None = None,
    idp=None,
) -> Preregistration:
    requester = Requester(
        via=via,
        idp=idp,
        owner=owner,
        actor=Actor.user(submitter),
        audit_fields={
            "submitted_by": submitter.get_username(),
            **({"cimd_url": cimd_url} if cimd_url else {}),
            **(audit_fields or {}),
        },
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
        adopts=request_fields["client"].registration_id if "client" in request_fields else None,
    )
    return Preregistration(submission=submission, delivered=delivered)


__all__ = [
    "GOVERNANCE_FIELDS",
    "adoption_metadata",
    "adoption_pending",
    "Preregistration",
    "PreregistrationError",
    "PreregistrationForbidden",
    "PreregistrationInvalid",
    "preregister",
]
