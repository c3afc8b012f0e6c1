"""RFC 7592 client configuration: the agent reads (GET), narrows (PUT) or deletes (DELETE) its registration.

The registration access token (prefix ``rrat_``) handed out at registration authenticates every call; it is
stored hashed on the request and rotated on every read and update (the new one is in the response). The old
one keeps working for a short grace, until the new one is first used; a reuse after that revokes both
(``approvals.oauth2.rat``). A delete revokes it.

An update may only narrow what was approved (``ClientMetadata.narrowing_problems``): fewer scopes, a shorter
lifetime, other keys; anything wider needs a new registration. Keys behind a ``jwks_uri`` are fetched and
vetted on every update (that is how an agent rotates them), outside any transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction

from approvals.choices import RequestState
from approvals.metadata import ClientMetadata, MetadataError, validate_client_metadata
from approvals.models import RegistrationRequest
from approvals.oauth2 import rat
from approvals.oauth2.client_keys import keys_audit, keys_fetch
from approvals.oauth2.errors import ERR_INVALID_METADATA, BadRequest, IntakeError, Unauthorized
from approvals.oauth2.storable import storable
from approvals.policy_store import active_policy
from approvals.services import DecisionConflict, request_withdraw_by_registrant
from inventory.choices import ClientState, CreatedVia
from inventory.keys import FetchedKeySet
from inventory.lifecycle import LifecycleError, client_transition
from inventory.models import Client
from inventory.services import client_narrow
from portal.audit import Actor


def registration_authenticate(registration_id: str, bearer: str | None) -> tuple[RegistrationRequest, rat.Presented]:
    """The registration ``bearer`` is a registration access token of, and which one it is (the current one, or the
    previous one inside its grace: ``approvals.oauth2.rat``); Unauthorized (401) otherwise. A reuse revokes the
    tokens."""
    if not bearer:
        raise Unauthorized("a registration access token (Authorization: Bearer) is required")
    reg_request = (
        RegistrationRequest.objects.select_related("client", "client__idp", "idp", "owner")
        .filter(public_id=registration_id)
        .first()
    )
    if reg_request is None:
        raise Unauthorized("the registration access token is not valid for this registration")
    return reg_request, rat.rat_authenticate(reg_request, bearer)


def _revoke_token(reg_request: RegistrationRequest) -> None:
    rat.rat_revoke(reg_request)


def _ended_error(reg_request: RegistrationRequest) -> IntakeError | None:
    """400 for a request that will never become a client (denied, lapsed, withdrawn)."""
    reason = reg_request.decision_reason or ""
    error = "unapproved_software_statement" if reg_request.via == CreatedVia.SOFTWARE_STATEMENT else "access_denied"
    if reg_request.state == RequestState.DENIED:
        return BadRequest(error, f"the registration was denied: {reason or 'no reason given'}")
    if reg_request.state == RequestState.LAPSED:
        return BadRequest(error, f"the registration lapsed without a decision{': ' + reason if reason else ''}")
    if reg_request.state == RequestState.WITHDRAWN:
        return BadRequest(error, f"the registration was withdrawn{': ' + reason if reason else ''}")
    return None


@dataclass
class Management:
    """The outcome of an RFC 7592 read or update, for the view to answer."""

    status: int
    reg_request: RegistrationRequest
    client: Client | None
    registration_access_token: str  # the rotated one


def registration_read(*, registration_id: str, bearer: str | None) -> Management:
    """RFC 7592 GET: 200 with the client when live, 202 while pending or provisioning, 400 once refused."""
    reg_request, presented = registration_authenticate(registration_id, bearer)
    ended = _ended_error(reg_request)
    if ended is not None:
        raise ended
    client = reg_request.client
    if client is not None and client.state not in (ClientState.PROVISIONING, ClientState.ACTIVE, ClientState.SUSPENDED):
        _revoke_token(reg_request)
        raise Unauthorized(f"the client is {client.state}; its registration access token is no longer valid")
    # conditional (rat.rat_rotate): of two uses at once one wins, the other rotates again from the grace
    rotated_token = rat.rat_rotate(reg_request, presented)
    status = 200 if client is not None and client.state != ClientState.PROVISIONING else 202
    return Management(status=status, reg_request=reg_request, client=client, registration_access_token=rotated_token)


def _agent_actor(reg_request: RegistrationRequest) -> Actor:
    return Actor.agent(f"client {reg_request.public_id}", reg_request.public_id)


def _current_metadata(reg_request: RegistrationRequest, client: Client) -> ClientMetadata:
    stored = dict(client.metadata or reg_request.metadata or {})
    stored["scope"] = " ".join(client.scopes or ())
    stored.setdefault("purpose", client.purpose or reg_request.purpose or "unknown")
    try:
        md = validate_client_metadata(stored, allow_shared_secret=True)
    except MetadataError:
        # Metadata stored by an older validator: compare on what the client row holds.
        md = ClientMetadata(purpose=client.purpose or "unknown", scope=tuple(client.scopes or ()))
    return dataclasses.replace(md, requested_ttl=None)


def registration_update(*, registration_id: str, bearer: str | None, body: Any) -> Management:
    """RFC 7592 PUT by the agent: narrow scopes or lifetime, rotate keys. Anything wider is refused."""
    reg_request, presented = registration_authenticate(registration_id, bearer)
    if presented.kind == rat.GRACE:
        raise Unauthorized(rat.PREVIOUS_FOR_UPDATE)
    ended = _ended_error(reg_request)
    if ended is not None:
        raise ended
    client = reg_request.client
    if client is None:
        raise BadRequest(ERR_INVALID_METADATA, "the registration is waiting for review; it can be read or deleted")
    if client.state not in (ClientState.PROVISIONING, ClientState.ACTIVE, ClientState.SUSPENDED):
        _revoke_token(reg_request)
        raise Unauthorized(f"the client is {client.state}; its registration access token is no longer valid")
    if not isinstance(body, dict):
        raise BadRequest(ERR_INVALID_METADATA, "client metadata must be a JSON object")
    claimed = body.get("client_id")
    if claimed is not None and claimed not in (client.idp_client_id, client.registration_id):
        raise BadRequest(ERR_INVALID_METADATA, "client_id does not match this registration")
    body = {k: v for k, v in body.items() if k != "software_statement"}
    body.setdefault("purpose", client.purpose)
    config = active_policy()
    try:
        wanted = validate_client_metadata(body, allow_shared_secret=config.allow_shared_secret)
    except MetadataError as exc:
        raise BadRequest(exc.error, exc.description)
    current = _current_metadata(reg_request, client)
    base = client.created_at
    current_ttl = max(0, math.ceil((client.expires_at - base).total_seconds())) if client.expires_at else None
    problems = current.narrowing_problems(wanted, current_ttl_seconds=current_ttl)
    if problems:
        raise BadRequest(ERR_INVALID_METADATA, "widening needs a new registration: " + "; ".join(problems))
    # Keys behind a jwks_uri are fetched and checked on every update (that is how an agent rotates them).
    fetched = keys_fetch(wanted.jwks_uri) if wanted.jwks_uri is not None else None
    return _apply_narrowing(
        reg_request=reg_request, client=client, wanted=wanted, presented=presented, base=base, fetched=fetched
    )


@transaction.atomic
def _apply_narrowing(
    *,
    reg_request: RegistrationRequest,
    client: Client,
    wanted: ClientMetadata,
    presented: rat.Presented,
    base,
    fetched: FetchedKeySet | None = None,
) -> Management:
    """The client narrowed (``inventory.services.client_narrow``) and the token rotated, in one transaction: an
    update whose token was already used (a replay) leaves nothing behind."""
    narrowed = client_narrow(
        client=client,
        actor=_agent_actor(reg_request),
        scopes=wanted.scope,
        expires_at_most=base + timedelta(seconds=wanted.requested_ttl) if wanted.requested_ttl is not None else None,
        metadata=storable(wanted.to_response_dict()),
        name=wanted.client_name,
        auth_method=wanted.token_endpoint_auth_method,
        jwks=fetched.jwks if fetched is not None else wanted.jwks,
        jwks_uri=wanted.jwks_uri or "",
        software_version=wanted.software_version or "",
        keys_audit=storable(keys_audit(wanted, fetched)),
        reason="RFC 7592 update by the agent",
    )
    rotated_token = rat.rat_rotate(reg_request, presented, grace=False)
    return Management(status=200, reg_request=reg_request, client=narrowed, registration_access_token=rotated_token)


def registration_delete(*, registration_id: str, bearer: str | None) -> None:
    """RFC 7592 DELETE: withdraw a pending request or retire the client (its IdP removal is queued)."""
    reg_request, _ = registration_authenticate(registration_id, bearer)
    actor = _agent_actor(reg_request)
    with transaction.atomic():
        if reg_request.state == RequestState.PENDING:
            # Decided a moment ago (a conflict): the delete still revokes the registration access token.
            with contextlib.suppress(DecisionConflict):
                request_withdraw_by_registrant(reg_request=reg_request, actor=actor)
        elif reg_request.client is not None and reg_request.client.state in (
            ClientState.PROVISIONING,
            ClientState.ACTIVE,
            ClientState.SUSPENDED,
        ):
            try:
                client_transition(
                    client=reg_request.client,
                    target=ClientState.RETIRED,
                    actor=actor,
                    reason="RFC 7592 delete by the agent",
                )
            except LifecycleError:
                raise Unauthorized("the client is no longer live")
        _revoke_token(reg_request)
