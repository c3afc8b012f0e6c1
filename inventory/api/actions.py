"""State-changing client actions of the API: what the owner pages, the explain page's containment buttons and
break glass offer, as POST endpoints.

Each view parses its input with a serializer (malformed input: 400, nothing changes), finds the client the
way the page does, asks the same permission function the page asks (``inventory.permissions`` /
``portal.roles``), and calls the same lifecycle service, which checks again and writes the audit event.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import breakglass, containment
from inventory import lifecycle as lc
from inventory.api.action_serializers import (
    BreakGlassInputSerializer,
    BreakGlassOutcomeSerializer,
    BreakGlassPreviewInputSerializer,
    BreakGlassPreviewSerializer,
    HoldLiftResultSerializer,
    ReasonSerializer,
    RenewResultSerializer,
    RequiredReasonSerializer,
    RotateKeySerializer,
    SponsorInviteSerializer,
    SponsorshipSerializer,
    TransferInputSerializer,
    TransferOfferSerializer,
)
from inventory.api.errors import errors, run_service
from inventory.api.serializers import ClientSerializer
from inventory.lifecycle_policies.sponsors import sponsor_invite
from inventory.models import Client
from inventory.permissions import can_manage_client, can_view_client
from portal import roles

CLIENT_RELATED = ("owner", "team", "idp", "parent", "hold_by")


def _reloaded(client: Client) -> Client:
    return Client.objects.select_related(*CLIENT_RELATED).get(pk=client.pk)


def _fresh(client: Client) -> dict:
    return dict(ClientSerializer(_reloaded(client)).data)


def _visible_client(request, registration_id: str) -> Client:
    """The client, if the caller may see it (as on its explain page); 404 otherwise, revealing nothing."""
    client = Client.objects.select_related(*CLIENT_RELATED).filter(registration_id=registration_id).first()
    if client is None or not can_view_client(request.user, client):
        raise NotFound("No such client.")
    return client


def _managed_client(request, registration_id: str) -> Client:
    """A client the caller may act on as its owner (the owner, or an admin): the owner pages' rule."""
    client = _visible_client(request, registration_id)
    if not can_manage_client(request.user, client):
        raise PermissionDenied("You can only act on your own clients.")
    return client


def _parse(serializer_class, request):
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data


# --- owner actions ---------------------------------------------------------------------------------------


@extend_schema(
    tags=["client actions"],
    summary="Renew (inside the approved ceiling; beyond it, or high tier, files a renewal request)",
    request=ReasonSerializer,
    responses={200: RenewResultSerializer, **errors()},
)
class ClientRenewView(APIView):
    def post(self, request, registration_id: str):
        client = _managed_client(request, registration_id)
        reason = _parse(ReasonSerializer, request)["reason"]
        outcome = run_service(lambda: lc.client_renew(client=client, user=request.user, reason=reason))
        review = outcome.reg_request if outcome.needs_review else None
        return Response(
            RenewResultSerializer(
                {
                    "renewed": outcome.renewed,
                    "needs_review": outcome.needs_review,
                    "request_id": review.public_id if review is not None else None,
                    "review_reasons": [r["message"] for r in review.reasons] if review is not None else [],
                    "client": _reloaded(outcome.client),
                }
            ).data
        )


class _TransitionView(APIView):
    service = staticmethod(lc.client_retire)

    def post(self, request, registration_id: str):
        client = _managed_client(request, registration_id)
        reason = _parse(ReasonSerializer, request)["reason"]
        service = self.service
        changed = run_service(lambda: service(client=client, user=request.user, reason=reason))
        return Response(_fresh(changed))


@extend_schema(
    tags=["client actions"],
    summary="Retire (ends the client and its live descendants; deleted at the IdP)",
    request=ReasonSerializer,
    responses={200: ClientSerializer, **errors()},
)
class ClientRetireView(_TransitionView):
    service = staticmethod(lc.client_retire)


@extend_schema(
    tags=["client actions"],
    summary="Suspend (the owner's own suspension; the owner may resume it)",
    request=ReasonSerializer,
    responses={200: ClientSerializer, **errors()},
)
class ClientSuspendView(_TransitionView):
    service = staticmethod(lc.client_suspend)


@extend_schema(
    tags=["client actions"],
    summary="Resume (never a hold: only security or an admin lifts one, at lift-hold)",
    request=ReasonSerializer,
    responses={200: ClientSerializer, **errors(conflict="Not suspended, held, or past its expiry")},
)
class ClientResumeView(_TransitionView):
    service = staticmethod(lc.client_resume)


@extend_schema(
    tags=["client actions"],
    summary="Rotate the key: replace the public JWKS (checked like registration's; private members refused)",
    request=RotateKeySerializer,
    responses={200: ClientSerializer, **errors()},
)
class ClientRotateKeyView(APIView):
    def post(self, request, registration_id: str):
        client = _managed_client(request, registration_id)
        data = _parse(RotateKeySerializer, request)
        changed = run_service(
            lambda: lc.client_rotate_key(client=client, user=request.user, jwks=data["jwks"], reason=data["reason"])
        )
        return Response(_fresh(changed))


@extend_schema(
    tags=["client actions"],
    summary="Offer the client to another person (ownership moves when they accept at /transfers/)",
    request=TransferInputSerializer,
    responses={201: TransferOfferSerializer, **errors(conflict="Not live, already offered, or to its owner")},
)
class ClientTransferView(APIView):
    def post(self, request, registration_id: str):
        client = _managed_client(request, registration_id)
        data = _parse(TransferInputSerializer, request)
        offer = run_service(
            lambda: lc.client_transfer_offer(
                client=client, to_user=data["username"], user=request.user, reason=data["reason"]
            )
        )
        return Response(TransferOfferSerializer(offer).data, status=201)


@extend_schema(
    tags=["client actions"],
    summary="Take over an orphaned client (its team, the team's manager, the former owner's manager, admins)",
    request=ReasonSerializer,
    responses={200: ClientSerializer, **errors(conflict="Not orphaned, not live, or you are at your quota")},
)
class ClientTakeOverView(APIView):
    def post(self, request, registration_id: str):
        # An orphan is by definition not the caller's yet: found by id, and the service decides who may.
        client = get_object_or_404(Client, registration_id=registration_id)
        reason = _parse(ReasonSerializer, request)["reason"]
        changed = run_service(lambda: lc.client_take_over(client=client, user=request.user, reason=reason))
        return Response(_fresh(changed))


@extend_schema(
    tags=["client actions"],
    summary="Invite a co-sponsor (they accept or decline at /sponsorships/)",
    request=SponsorInviteSerializer,
    responses={201: SponsorshipSerializer, **errors(conflict="Already a sponsor or invited, or not a person")},
)
class ClientSponsorInviteView(APIView):
    def post(self, request, registration_id: str):
        client = _visible_client(request, registration_id)
        username = _parse(SponsorInviteSerializer, request)["username"]
        sponsorship = run_service(lambda: sponsor_invite(client=client, user=request.user, username=username))
        return Response(SponsorshipSerializer(sponsorship).data, status=201)


# --- containment (security and admins) -------------------------------------------------------------------


def _contained_client(request, registration_id: str) -> Client:
    client = _visible_client(request, registration_id)
    if not roles.can_hold_clients(request.user):
        raise PermissionDenied("Only security or an admin can place or lift holds and change spawn rights.")
    return client


@extend_schema(
    tags=["containment"],
    summary="Hold: suspend the client and its live descendants; only security or an admin can lift it",
    request=RequiredReasonSerializer,
    responses={200: ClientSerializer, **errors(conflict="Already held, or not live")},
)
class ClientHoldView(APIView):
    def post(self, request, registration_id: str):
        client = _contained_client(request, registration_id)
        reason = _parse(RequiredReasonSerializer, request)["reason"]
        run_service(lambda: containment.client_hold_place(client=client, user=request.user, reason=reason))
        return Response(_fresh(client))


@extend_schema(
    tags=["containment"],
    summary="Lift a hold (on the client and on its descendants held by the same decision)",
    request=RequiredReasonSerializer,
    responses={200: HoldLiftResultSerializer, **errors(conflict="Not held, or an ancestor is held too")},
)
class ClientLiftHoldView(APIView):
    def post(self, request, registration_id: str):
        client = _contained_client(request, registration_id)
        reason = _parse(RequiredReasonSerializer, request)["reason"]
        done = run_service(lambda: containment.client_hold_lift(client=client, user=request.user, reason=reason))
        return Response(
            HoldLiftResultSerializer(
                {
                    "lifted": done.lifted,
                    "resumed": done.resumed,
                    "still_suspended": done.still_suspended,
                    "client": _reloaded(client),
                }
            ).data
        )


@extend_schema(
    tags=["containment"],
    summary="Revoke the client's right to spawn children (existing children are unchanged)",
    request=RequiredReasonSerializer,
    responses={200: ClientSerializer, **errors(conflict="Already revoked")},
)
class ClientRevokeSpawnView(APIView):
    def post(self, request, registration_id: str):
        client = _contained_client(request, registration_id)
        reason = _parse(RequiredReasonSerializer, request)["reason"]
        run_service(lambda: containment.client_spawn_revoke_by(client=client, user=request.user, reason=reason))
        return Response(_fresh(client))


@extend_schema(
    tags=["containment"],
    summary="Restore the client's right to spawn children (within the policy's per-parent limit)",
    request=RequiredReasonSerializer,
    responses={200: ClientSerializer, **errors(conflict="It may already spawn children")},
)
class ClientRestoreSpawnView(APIView):
    def post(self, request, registration_id: str):
        client = _contained_client(request, registration_id)
        reason = _parse(RequiredReasonSerializer, request)["reason"]
        run_service(lambda: containment.client_spawn_restore(client=client, user=request.user, reason=reason))
        return Response(_fresh(client))


# --- break glass ----------------------------------------------------------------------------------------


def _require_break_glass(request) -> None:
    if not roles.can_break_glass(request.user):
        raise PermissionDenied("Break glass is for admins and security.")


@extend_schema(
    tags=["containment"],
    summary="Break glass, preview: what confirming would do (changes nothing)",
    request=BreakGlassPreviewInputSerializer,
    responses={200: BreakGlassPreviewSerializer, **errors(conflict="The scope names nothing Registrar knows")},
)
class BreakGlassPreviewView(APIView):
    def post(self, request):
        _require_break_glass(request)
        data = _parse(BreakGlassPreviewInputSerializer, request)
        preview = run_service(
            lambda: breakglass.breakglass_preview(
                user=request.user, scope=data["scope"], value=data["value"], action=data["action"]
            )
        )
        return Response(BreakGlassPreviewSerializer(preview).data)


@extend_schema(
    tags=["containment"],
    summary="Break glass: suspend (and hold) or retire every live client in a scope, with its effects",
    request=BreakGlassInputSerializer,
    responses={200: BreakGlassOutcomeSerializer, **errors(conflict="The scope names nothing Registrar knows")},
)
class BreakGlassView(APIView):
    def post(self, request):
        _require_break_glass(request)
        data = _parse(BreakGlassInputSerializer, request)
        outcome = run_service(
            lambda: breakglass.breakglass_execute(
                user=request.user,
                scope=data["scope"],
                value=data["value"],
                action=data["action"],
                reason=data["reason"],
            )
        )
        return Response(BreakGlassOutcomeSerializer(outcome).data)
