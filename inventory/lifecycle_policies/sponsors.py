"""Co-sponsors: the owner invites another active person to sponsor a client; they count once they accept.

The sponsors rule (``inventory.lifecycle_policies.rules``) asks for a minimum of active sponsors per tier — the
owner if active, plus accepted co-sponsors who are active (default: 2 for high tier). Each change is one
transaction and one audit event on the client.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory.choices import LIVE_STATES
from inventory.lifecycle import LifecycleError, PermissionRefused
from inventory.models import Client, ClientSponsor, SponsorState
from inventory.permissions import can_manage_client
from portal.audit import Actor, audit_record
from portal.roles import Role, has_role


def _audit(user, action: str, sponsorship: ClientSponsor, before: str | None) -> None:
    audit_record(
        actor=Actor.user(user),
        action=action,
        object_type="client",
        object_id=sponsorship.client.registration_id,
        before={"sponsor": sponsorship.user.username, "state": before} if before else None,
        after={"sponsor": sponsorship.user.username, "state": sponsorship.state},
        policy_version=sponsorship.client.policy_version,
    )


@transaction.atomic
def sponsor_invite(*, client: Client, user, username: str) -> ClientSponsor:
    """The owner (or an admin) invites ``username`` to co-sponsor ``client``."""
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if not can_manage_client(user, locked):
        raise PermissionRefused(f"{user} may not add sponsors to {locked.registration_id}")
    if locked.state not in LIVE_STATES:
        raise LifecycleError(f"a {locked.state} client takes no new sponsors")
    sponsor = get_user_model().objects.filter(username=username, is_active=True).first()
    if sponsor is None:
        raise LifecycleError(f"no active person named {username!r}")
    if sponsor.pk == locked.owner_id:
        raise LifecycleError(f"{username} owns this client already")
    try:
        with transaction.atomic():
            sponsorship = ClientSponsor.objects.create(client=locked, user=sponsor, invited_by=user)
    except IntegrityError:
        raise LifecycleError(f"{username} is already invited or a sponsor") from None
    _audit(user, "client.sponsor_invite", sponsorship, None)
    return sponsorship


def _locked(sponsorship: ClientSponsor) -> ClientSponsor:
    return ClientSponsor.objects.select_for_update(of=("self",)).select_related("client", "user").get(pk=sponsorship.pk)


@transaction.atomic
def sponsor_decide(*, sponsorship: ClientSponsor, user, accept: bool) -> ClientSponsor:
    """The invited person accepts or declines."""
    locked = _locked(sponsorship)
    if locked.user_id != user.pk:
        raise PermissionRefused("only the person invited can answer an invitation")
    if locked.state != SponsorState.PENDING:
        raise LifecycleError(f"this invitation is {locked.get_state_display().lower()} already")
    if accept and locked.client.state not in LIVE_STATES:
        raise LifecycleError(f"the client is {locked.client.state}")
    locked.state = SponsorState.ACTIVE if accept else SponsorState.DECLINED
    locked.decided_at = timezone.now()
    locked.save(update_fields=["state", "decided_at"])
    _audit(user, "client.sponsor_accept" if accept else "client.sponsor_decline", locked, SponsorState.PENDING)
    return locked


@transaction.atomic
def sponsor_remove(*, sponsorship: ClientSponsor, user) -> ClientSponsor:
    """A sponsor leaves, or the owner (or an admin) removes one; an invitation can be withdrawn the same way."""
    locked = _locked(sponsorship)
    if locked.user_id != user.pk and not can_manage_client(user, locked.client) and not has_role(user, Role.ADMIN):
        raise PermissionRefused("only the sponsor, the owner or an admin can remove a sponsor")
    if locked.state not in (SponsorState.PENDING, SponsorState.ACTIVE):
        raise LifecycleError("this sponsor is no longer a sponsor")
    before = locked.state
    locked.state = SponsorState.REMOVED
    locked.decided_at = timezone.now()
    locked.save(update_fields=["state", "decided_at"])
    _audit(user, "client.sponsor_remove", locked, before)
    return locked


def sponsors_of(client: Client) -> list[ClientSponsor]:
    return list(
        client.sponsors.filter(state__in=[SponsorState.PENDING, SponsorState.ACTIVE])
        .select_related("user")
        .order_by("created_at")
    )
