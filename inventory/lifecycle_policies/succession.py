"""An owner leaves, a co-sponsor succeeds them: a client is orphaned only when no active sponsor is left.

Called by the orphan sweep (``inventory.sweeps.sweep_orphans``) before it flags orphans, so every leaver signal —
the Django admin action, SCIM ``active: false`` / DELETE, SSO reporting the account disabled, or simply
``is_active`` unticked — goes the same way. What a mature product does (Entra Agent ID keeps a departed owner's
agent running under its sponsors; Okta asks for two owners so that one can leave): the client keeps running and
ownership passes to the **longest-standing active co-sponsor** (earliest accepted), who becomes its owner with
everything that comes with it — renewals, attestation, reminders, the owner's pages. Their co-sponsorship ends
(they are the owner now), so the sponsors rule counts one sponsor fewer and flags the client if that takes it
below its tier's minimum.

The successor's live-client quota (``inventory.quotas``) still applies: a sponsor with no room is passed over for
the next one; with nobody left the client is orphaned as before (and succeeds on a later run once a sponsor has
room). Each succession is one ``client.owner_succession`` audit event (actor: the sweep) naming the former owner
and the sponsor who took over, written in the batch's transaction; the new owner gets one mail per run listing
the clients they took over.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Exists, OuterRef, Q

from inventory import quotas
from inventory.lifecycle import client_snapshot
from inventory.models import Client, ClientSponsor, SponsorState, TransferOffer, TransferState
from portal.audit import Actor, audit_record_many


def eligible_sponsors() -> Q:
    """Sponsorships that can take over a client: accepted, by an active person who is not a service account."""
    return Q(state=SponsorState.ACTIVE, user__is_active=True, user__is_service_account=False)


def has_successor() -> Exists:
    """Filter for clients with at least one co-sponsor who could succeed the owner."""
    return Exists(ClientSponsor.objects.filter(eligible_sponsors(), client=OuterRef("pk")))


def succeed_owners(batch: list[Client], *, actor: Actor, now: dt.datetime) -> list[int]:
    """Hand each locked client in ``batch`` (owner gone) to its longest-standing eligible co-sponsor.

    Runs inside the sweep's batch transaction. Every quota lock (a user row) is taken before the one audit append
    at the end (the lock order ``inventory.quotas`` asks for). Returns the ids of clients that changed owner."""
    candidates: dict[int, list[ClientSponsor]] = {}
    for sponsorship in (
        ClientSponsor.objects.filter(eligible_sponsors(), client_id__in=[c.pk for c in batch])
        .select_related("user")
        .select_for_update(of=("self",))
        .order_by("client_id", "decided_at", "pk")
    ):
        candidates.setdefault(sponsorship.client_id, []).append(sponsorship)
    events, changed = [], []
    for client in batch:
        for sponsorship in candidates.get(client.pk, []):
            try:
                quotas.owner_quota_hold(owner_id=sponsorship.user_id, subject=sponsorship.user.get_username())
            except quotas.OwnerQuotaExceeded:
                continue
            before = client_snapshot(client) | {"orphaned_at": client.orphaned_at}
            former = client.owner_id
            # The UPDATE happens now, so the next quota count in this transaction sees the client as theirs.
            Client.objects.filter(pk=client.pk).update(owner_id=sponsorship.user_id, orphaned_at=None)
            client.owner_id, client.orphaned_at = sponsorship.user_id, None
            ClientSponsor.objects.filter(pk=sponsorship.pk).update(state=SponsorState.REMOVED, decided_at=now)
            # As on a take-over: an offer the former owner left open is not theirs to give any more.
            TransferOffer.objects.filter(client_id=client.pk, state=TransferState.PENDING).update(
                state=TransferState.CANCELLED, decided_at=now
            )
            events.append(
                {
                    "actor": actor,
                    "action": "client.owner_succession",
                    "object_type": "client",
                    "object_id": client.registration_id,
                    "before": before,
                    "after": client_snapshot(client)
                    | {"orphaned_at": None, "former_owner": former, "successor": sponsorship.user.get_username()},
                    "reason": "owner left: the longest-standing active co-sponsor takes over",
                    "policy_version": client.policy_version,
                }
            )
            changed.append(client.pk)
            break
    audit_record_many(events)
    return changed
