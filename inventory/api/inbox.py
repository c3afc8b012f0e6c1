"""The API's inboxes: transfer offers and co-sponsorships a person answers, and the admins' sync failures.

Same services and the same checks as ``/inventory/transfers/``, ``/inventory/sponsorships/`` and
``/inventory/sync-failures/``: the service decides who may answer an offer or a sponsorship (403 otherwise).
"""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import lifecycle as lc
from inventory.api.action_serializers import (
    ReasonSerializer,
    RequiredReasonSerializer,
    SponsorshipSerializer,
    SyncFailureSerializer,
    TransferOfferSerializer,
)
from inventory.api.errors import errors, run_service
from inventory.lifecycle_policies.sponsors import sponsor_decide, sponsor_remove
from inventory.models import ClientSponsor, OutboxEntry, SponsorState, TransferOffer, TransferState
from inventory.outbox import OutboxError, outbox_resolve, outbox_retry
from inventory.selectors.sync import dead_letters, sync_failure_rows
from portal.api.errors import Conflict
from portal.audit import Actor
from portal.roles import HasRole, Role


def _reason(request, serializer_class=ReasonSerializer) -> str:
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data["reason"]


# --- transfers ------------------------------------------------------------------------------------------


@extend_schema(tags=["transfers"], summary="Pending transfer offers to you, from you, or made by you")
class TransferListView(generics.ListAPIView):
    serializer_class = TransferOfferSerializer
    queryset = TransferOffer.objects.none()  # for the schema; the real one is the caller's

    def get_queryset(self):
        user = self.request.user
        return (
            TransferOffer.objects.filter(state=TransferState.PENDING)
            .filter(Q(to_user=user) | Q(from_user=user) | Q(offered_by=user))
            .select_related("client", "from_user", "to_user", "offered_by")
            .order_by("-created_at", "-pk")
        )


def _offer(pk: int) -> TransferOffer:
    return get_object_or_404(TransferOffer.objects.select_related("client", "from_user", "to_user"), pk=pk)


@extend_schema(
    tags=["transfers"],
    summary="Accept an offer made to you: you own the client from now on",
    request=ReasonSerializer,
    responses={200: TransferOfferSerializer, **errors(conflict="No longer pending, or you are at your quota")},
)
class TransferAcceptView(APIView):
    def post(self, request, pk: int):
        offer = _offer(pk)
        reason = _reason(request)
        run_service(lambda: lc.client_transfer_accept(offer=offer, user=request.user, reason=reason))
        return Response(TransferOfferSerializer(_offer(pk)).data)


@extend_schema(
    tags=["transfers"],
    summary="Decline an offer made to you, or withdraw one you made",
    request=ReasonSerializer,
    responses={200: TransferOfferSerializer, **errors(conflict="No longer pending")},
)
class TransferDeclineView(APIView):
    def post(self, request, pk: int):
        offer = _offer(pk)
        reason = _reason(request)
        run_service(lambda: lc.client_transfer_decline(offer=offer, user=request.user, reason=reason))
        return Response(TransferOfferSerializer(_offer(pk)).data)


# --- co-sponsorships ----------------------------------------------------------------------------------


@extend_schema(tags=["sponsorships"], summary="Your pending and active co-sponsorships")
class SponsorshipListView(generics.ListAPIView):
    serializer_class = SponsorshipSerializer
    queryset = ClientSponsor.objects.none()  # for the schema; the real one is the caller's

    def get_queryset(self):
        return (
            ClientSponsor.objects.filter(
                Q(user=self.request.user), state__in=[SponsorState.PENDING, SponsorState.ACTIVE]
            )
            .select_related("client", "user", "invited_by")
            .order_by("state", "-created_at", "-pk")
        )


def _sponsorship(pk: int) -> ClientSponsor:
    return get_object_or_404(ClientSponsor.objects.select_related("client", "user", "invited_by"), pk=pk)


class _SponsorshipDecisionView(APIView):
    decision = "accept"

    def post(self, request, pk: int):
        sponsorship = _sponsorship(pk)
        if self.decision == "remove":
            run_service(lambda: sponsor_remove(sponsorship=sponsorship, user=request.user))
        else:
            accept = self.decision == "accept"
            run_service(lambda: sponsor_decide(sponsorship=sponsorship, user=request.user, accept=accept))
        return Response(SponsorshipSerializer(_sponsorship(pk)).data)


_NO_BODY = {200: SponsorshipSerializer, **errors(conflict="Not pending (or not active, to remove)")}


@extend_schema(tags=["sponsorships"], summary="Accept an invitation to co-sponsor", request=None, responses=_NO_BODY)
class SponsorshipAcceptView(_SponsorshipDecisionView):
    decision = "accept"


@extend_schema(tags=["sponsorships"], summary="Decline an invitation", request=None, responses=_NO_BODY)
class SponsorshipDeclineView(_SponsorshipDecisionView):
    decision = "decline"


@extend_schema(
    tags=["sponsorships"],
    summary="Leave a sponsorship, or (owner, admin) remove a sponsor or withdraw an invitation",
    request=None,
    responses=_NO_BODY,
)
class SponsorshipRemoveView(_SponsorshipDecisionView):
    decision = "remove"


# --- sync failures (admins) -----------------------------------------------------------------------------

ADMINS = HasRole.of(Role.ADMIN)


@extend_schema(tags=["sync failures"], summary="Dead-lettered IdP changes, with what to do about each")
class SyncFailureListView(generics.ListAPIView):
    permission_classes = [ADMINS]
    serializer_class = SyncFailureSerializer

    def get_queryset(self):
        return dead_letters()

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        rows = [
            {
                **SyncFailureSerializer(row.entry).data,
                "error": row.error,
                "hint": row.hint,
                "resolvable": row.resolvable,
            }
            for row in sync_failure_rows(page if page is not None else self.get_queryset())
        ]
        return self.get_paginated_response(rows) if page is not None else Response(rows)


def _dead_letter(pk: int) -> OutboxEntry:
    return get_object_or_404(
        OutboxEntry.objects.select_related("client", "idp"), pk=pk
    )  # the service checks it is dead


def _one_row(pk: int) -> dict:
    entry = OutboxEntry.objects.select_related("client", "idp").get(pk=pk)
    row = sync_failure_rows([entry])[0]
    return {**SyncFailureSerializer(entry).data, "error": row.error, "hint": row.hint, "resolvable": row.resolvable}


@extend_schema(
    tags=["sync failures"],
    summary="Retry: a fresh set of attempts (a dead create for an ended client is superseded instead)",
    request=None,
    responses={200: SyncFailureSerializer, **errors(conflict="Not dead-lettered any more")},
)
class SyncFailureRetryView(APIView):
    permission_classes = [ADMINS]

    def post(self, request, pk: int):
        entry = _dead_letter(pk)
        try:
            outbox_retry(entry=entry, actor=Actor.user(request.user))
        except OutboxError as refused:
            raise Conflict(str(refused)) from refused
        return Response(_one_row(pk))


@extend_schema(
    tags=["sync failures"],
    summary="Mark a dead disable or delete resolved (you settled it at the IdP), with a reason",
    request=RequiredReasonSerializer,
    responses={200: SyncFailureSerializer, **errors(conflict="Not a dead disable or delete")},
)
class SyncFailureResolveView(APIView):
    permission_classes = [ADMINS]

    def post(self, request, pk: int):
        entry = _dead_letter(pk)
        reason = _reason(request, RequiredReasonSerializer)
        try:
            outbox_resolve(entry=entry, actor=Actor.user(request.user), reason=reason)
        except OutboxError as refused:
            raise Conflict(str(refused)) from refused
        return Response(_one_row(pk))
