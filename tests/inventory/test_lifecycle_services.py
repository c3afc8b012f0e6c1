"""Owner actions in inventory.lifecycle: each works and is audited; each refusal changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from joserfc.jwk import ECKey, OctKey, RSAKey

from approvals.models import Policy, RegistrationRequest
from inventory.choices import ClientState, OutboxOperation, RiskTier
from inventory.lifecycle import (
    IllegalTransition,
    LifecycleError,
    PermissionRefused,
    client_flag_stale,
    client_mark_orphaned,
    client_record_idp_disabled,
    client_renew,
    client_resume,
    client_retire,
    client_rotate_key,
    client_suspend,
    client_take_over,
    client_transfer_accept,
    client_transfer_decline,
    client_transfer_offer,
    tier_ttl_ceiling,
)
from inventory.models import Client, OutboxEntry, TransferOffer, TransferState
from portal.audit import Actor, verify_chain
from portal.models import AuditEvent
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


def _nothing_changed(client: Client, **expected):
    fresh = Client.objects.get(pk=client.pk)
    for name, value in expected.items():
        assert getattr(fresh, name) == value, name
    assert AuditEvent.objects.count() == 0
    assert OutboxEntry.objects.count() == 0


def public_jwks():
    return {"keys": [ECKey.generate_key("P-256").as_dict(private=False) | {"kid": "k1"}]}


# --- renew ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier,seconds", [(RiskTier.LOW, 86400), (RiskTier.MEDIUM, 7 * 86400)])
def test_low_and_medium_renew_directly_up_to_the_tier_ceiling(owner, tier, seconds):
    client = ClientFactory(owner=owner, risk_tier=tier)
    now = timezone.now()
    outcome = client_renew(client=client, user=owner, ttl_seconds=10 * 86400, now=now, reason="still needed")
    client.refresh_from_db()
    assert outcome.renewed and not outcome.needs_review
    assert client.expires_at == now + dt.timedelta(seconds=seconds)
    assert client.renewals == 1
    event = AuditEvent.objects.get()
    assert (event.action, event.actor_label, event.reason) == ("client.renew", "olivia", "still needed")
    assert not RegistrationRequest.objects.exists()


def test_renew_reads_the_ceiling_from_the_active_policy(owner):
    Policy.objects.update(is_active=False)
    Policy.objects.create(version=9, thresholds={"low_ttl_seconds": 3600}, is_active=True)
    assert tier_ttl_ceiling(RiskTier.LOW) == 3600
    assert tier_ttl_ceiling(RiskTier.MEDIUM) == 7 * 86400  # missing key: the default
    client = ClientFactory(owner=owner)
    now = timezone.now()
    client_renew(client=client, user=owner, now=now)
    client.refresh_from_db()
    assert client.expires_at == now + dt.timedelta(hours=1)


@pytest.mark.parametrize("flags", [{"risk_tier": RiskTier.HIGH}, {"stale_at": "now"}, {"orphaned_at": "now"}])
def test_high_tier_stale_or_orphaned_renewal_goes_to_review(owner, flags):
    flags = {k: (timezone.now() if v == "now" else v) for k, v in flags.items()}
    client = ClientFactory(owner=owner, **flags)
    expires = client.expires_at
    outcome = client_renew(client=client, user=owner, reason="need it")
    client.refresh_from_db()
    assert outcome.needs_review and not outcome.renewed
    assert client.expires_at == expires and client.renewals == 0
    request = RegistrationRequest.objects.get()
    assert (request.kind, request.state, request.client_id, request.owner_id) == (
        "renewal",
        "pending",
        client.pk,
        owner.pk,
    )
    assert request.approvals_needed == (2 if client.risk_tier == RiskTier.HIGH else 1)
    assert AuditEvent.objects.get().action == "client.renewal_requested"
    with pytest.raises(LifecycleError, match="already waiting"):
        client_renew(client=client, user=owner)
    assert RegistrationRequest.objects.count() == 1


@pytest.mark.parametrize("state", [ClientState.SUSPENDED, ClientState.EXPIRED, ClientState.RETIRED])
def test_only_active_clients_renew(owner, state):
    client = ClientFactory(owner=owner, state=state)
    with pytest.raises(LifecycleError):
        client_renew(client=client, user=owner)
    _nothing_changed(client, state=state, renewals=0)


def test_renew_refuses_a_bad_ttl(owner):
    client = ClientFactory(owner=owner)
    with pytest.raises(LifecycleError, match="positive"):
        client_renew(client=client, user=owner, ttl_seconds=-5)
    _nothing_changed(client, renewals=0)


def test_someone_elses_client_cannot_be_renewed_or_retired(owner):
    stranger = UserFactory(roles=["owner"])
    client = ClientFactory(owner=owner)
    for service in (client_renew, client_retire, client_suspend):
        with pytest.raises(PermissionRefused):
            service(client=client, user=stranger)
    _nothing_changed(client, state=ClientState.ACTIVE, renewals=0)


def test_admin_may_act_on_any_client(owner, admin_user):
    client = ClientFactory(owner=owner)
    client_suspend(client=client, user=admin_user, reason="incident")
    assert Client.objects.get(pk=client.pk).state == ClientState.SUSPENDED


# --- retire, suspend, resume ---------------------------------------------------------------------


def test_retire_deletes_at_idp_and_retires_descendants(owner):
    parent = ClientFactory(owner=owner)
    child = ClientFactory(owner=owner, parent=parent, depth=1)
    client_retire(client=parent, user=owner, reason="done")
    assert set(Client.objects.values_list("state", flat=True)) == {ClientState.RETIRED}
    assert sorted(OutboxEntry.objects.values_list("client_id", "operation")) == sorted(
        [(parent.pk, OutboxOperation.DELETE), (child.pk, OutboxOperation.DELETE)]
    )
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "client.retire",
        "client.retired.cascade",
    ]
    assert verify_chain()[1] is None


def test_retire_twice_is_illegal_and_changes_nothing(owner):
    client = ClientFactory(owner=owner, state=ClientState.RETIRED)
    with pytest.raises(IllegalTransition):
        client_retire(client=client, user=owner)
    _nothing_changed(client, state=ClientState.RETIRED)


def test_suspend_then_resume_disables_then_updates_at_idp(owner):
    client = ClientFactory(owner=owner)
    client_suspend(client=client, user=owner)
    client_resume(client=client, user=owner)
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    assert list(OutboxEntry.objects.order_by("id").values_list("operation", flat=True)) == [
        OutboxOperation.DISABLE,
        OutboxOperation.UPDATE,
    ]
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "client.suspend",
        "client.resume",
    ]


def test_resume_refuses_past_expiry_and_orphaned(owner):
    expired = ClientFactory(
        owner=owner, state=ClientState.SUSPENDED, expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    orphan = ClientFactory(owner=owner, state=ClientState.SUSPENDED, orphaned_at=timezone.now())
    for client in (expired, orphan):
        with pytest.raises(LifecycleError):
            client_resume(client=client, user=owner)
        assert Client.objects.get(pk=client.pk).state == ClientState.SUSPENDED
    with pytest.raises(IllegalTransition):
        client_resume(client=ClientFactory(owner=owner), user=owner)  # active: nothing to resume
    assert AuditEvent.objects.count() == 0 and OutboxEntry.objects.count() == 0


# --- rotate key ----------------------------------------------------------------------------------


def test_rotate_key_stores_public_jwks_and_pushes_update(owner):
    client = ClientFactory(owner=owner, jwks_uri="https://agent.example/jwks")
    jwks = public_jwks()
    client_rotate_key(client=client, user=owner, jwks=jwks, reason="scheduled rotation")
    client.refresh_from_db()
    assert client.jwks == jwks and client.jwks_uri == ""
    assert list(OutboxEntry.objects.values_list("operation", flat=True)) == [OutboxOperation.UPDATE]
    event = AuditEvent.objects.get()
    assert event.action == "client.rotate_key" and len(event.after["keys"]) == 1


@pytest.mark.parametrize(
    "bad,message",
    [
        ("not json", "jwks is not valid JSON"),
        ({"keys": []}, "jwks.keys must contain at least one key"),
        ({"nokeys": 1}, 'jwks must be a JSON object with a "keys" list'),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "bad"}]}, "jwks.keys[0] is not a valid public JWK"),
        ("private-ec", "jwks.keys[0] contains private key material (d)"),
        ("private-rsa", "jwks.keys[0] contains private key material (d, p, q, dp, dq, qi)"),
        ("symmetric", "jwks.keys[0] is a symmetric (oct) key"),
    ],
)
def test_rotate_key_refuses_private_or_broken_keys(owner, bad, message):
    if bad == "private-ec":
        bad = {"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}
    elif bad == "private-rsa":
        bad = {"keys": [RSAKey.generate_key(2048).as_dict(private=True)]}
    elif bad == "symmetric":
        bad = {"keys": [OctKey.generate_key(256).as_dict()]}
    old = public_jwks()
    client = ClientFactory(owner=owner, jwks=old)
    with pytest.raises(LifecycleError) as info:
        client_rotate_key(client=client, user=owner, jwks=bad)
    assert message in str(info.value)
    _nothing_changed(client, jwks=old)


# --- transfer ------------------------------------------------------------------------------------


def test_transfer_moves_ownership_only_on_accept(owner):
    dave = UserFactory(username="dave", roles=["owner"])
    client = ClientFactory(owner=owner)
    offer = client_transfer_offer(client=client, to_user=dave, user=owner, reason="team change")
    assert Client.objects.get(pk=client.pk).owner_id == owner.pk
    client_transfer_accept(offer=offer, user=dave)
    assert Client.objects.get(pk=client.pk).owner_id == dave.pk
    assert TransferOffer.objects.get().state == TransferState.ACCEPTED
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "client.transfer_offer",
        "client.transfer_accept",
    ]
    with pytest.raises(LifecycleError, match="already accepted"):
        client_transfer_decline(offer=offer, user=dave)


def test_transfer_decline_and_cancel_keep_the_owner(owner):
    dave = UserFactory(username="dave")
    client = ClientFactory(owner=owner)
    offer = client_transfer_offer(client=client, to_user=dave, user=owner)
    client_transfer_decline(offer=offer, user=dave, reason="not mine")
    assert TransferOffer.objects.get().state == TransferState.DECLINED
    offer2 = client_transfer_offer(client=client, to_user=dave, user=owner)
    client_transfer_decline(offer=offer2, user=owner)
    assert TransferOffer.objects.get(pk=offer2.pk).state == TransferState.CANCELLED
    assert Client.objects.get(pk=client.pk).owner_id == owner.pk


def test_transfer_refusals_change_nothing(owner):
    client = ClientFactory(owner=owner)
    inactive = UserFactory(is_active=False)
    robot = UserFactory(is_service_account=True)
    for target in (inactive, robot, owner):
        with pytest.raises(LifecycleError):
            client_transfer_offer(client=client, to_user=target, user=owner)
    stranger = UserFactory()
    with pytest.raises(PermissionRefused):
        client_transfer_offer(client=client, to_user=stranger, user=stranger)
    assert not TransferOffer.objects.exists() and AuditEvent.objects.count() == 0
    dave = UserFactory(username="dave")
    offer = client_transfer_offer(client=client, to_user=dave, user=owner)
    with pytest.raises(LifecycleError, match="pending"):
        client_transfer_offer(client=client, to_user=stranger, user=owner)
    with pytest.raises(PermissionRefused):
        client_transfer_accept(offer=offer, user=stranger)
    with pytest.raises(PermissionRefused):
        client_transfer_decline(offer=offer, user=stranger)
    assert Client.objects.get(pk=client.pk).owner_id == owner.pk
    assert TransferOffer.objects.get().state == TransferState.PENDING


def test_accepting_an_offer_for_an_ended_client_fails(owner):
    dave = UserFactory(username="dave")
    client = ClientFactory(owner=owner)
    offer = client_transfer_offer(client=client, to_user=dave, user=owner)
    client_retire(client=client, user=owner)
    with pytest.raises(LifecycleError, match="no longer"):
        client_transfer_accept(offer=offer, user=dave)
    assert Client.objects.get(pk=client.pk).owner_id == owner.pk
    assert TransferOffer.objects.get().state == TransferState.PENDING


def test_orphan_take_over_by_team_or_manager_only(owner):
    manager = UserFactory(username="mgr")
    member = UserFactory(username="member")
    team = TeamFactory(manager=manager)
    team.members.add(member)
    owner.is_active = False
    owner.save()
    client = ClientFactory(owner=owner, team=team, orphaned_at=timezone.now())
    with pytest.raises(PermissionRefused):
        client_take_over(client=client, user=UserFactory())
    assert Client.objects.get(pk=client.pk).owner_id == owner.pk
    client_take_over(client=client, user=member, reason="I run it now")
    client.refresh_from_db()
    assert client.owner_id == member.pk and client.orphaned_at is None
    with pytest.raises(LifecycleError, match="only an orphaned"):
        client_take_over(client=client, user=manager)


def _publish_quota(limit: int) -> None:
    from approvals.policy_store import clear_cache, policy_publish

    policy_publish(actor=Actor.system("test"), thresholds={"max_live_clients_per_owner": limit})
    clear_cache()


@pytest.fixture
def _policy_cache_cleared():
    """The active policy is cached per process: a quota published inside a rolled-back test must not outlive it."""
    from approvals.policy_store import clear_cache

    clear_cache()
    yield
    clear_cache()


def test_accepting_a_transfer_needs_room_in_the_recipients_quota(owner, _policy_cache_cleared):
    _publish_quota(2)
    dave = UserFactory(username="dave")
    ClientFactory(owner=dave)
    ClientFactory(owner=dave, state=ClientState.SUSPENDED)
    client = ClientFactory(owner=owner)
    offer = client_transfer_offer(client=client, to_user=dave, user=owner)
    with pytest.raises(LifecycleError) as refused:
        client_transfer_accept(offer=offer, user=dave)
    assert str(refused.value) == "you already have 2 live clients; the limit is 2 (max_live_clients_per_owner)"
    assert Client.objects.get(pk=client.pk).owner_id == owner.pk
    assert TransferOffer.objects.get().state == TransferState.PENDING  # still there to accept later
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["policy.publish", "client.transfer_offer"]
    Client.objects.filter(owner=dave, state=ClientState.SUSPENDED).update(state=ClientState.RETIRED)
    client_transfer_accept(offer=offer, user=dave)
    assert Client.objects.get(pk=client.pk).owner_id == dave.pk


def test_taking_over_an_orphan_needs_room_in_the_quota(owner, _policy_cache_cleared):
    _publish_quota(1)
    member = UserFactory(username="member")
    team = TeamFactory()
    team.members.add(member)
    ClientFactory(owner=member)
    owner.is_active = False
    owner.save()
    client = ClientFactory(owner=owner, team=team, orphaned_at=timezone.now())
    with pytest.raises(LifecycleError, match="you already have 1 live clients; the limit is 1"):
        client_take_over(client=client, user=member)
    fresh = Client.objects.get(pk=client.pk)
    assert fresh.owner_id == owner.pk and fresh.orphaned_at is not None
    assert not AuditEvent.objects.filter(action="client.take_over").exists()


# --- flags ---------------------------------------------------------------------------------------


def test_flags_are_set_once(owner):
    client = ClientFactory(owner=owner)
    actor = Actor.system("test")
    assert client_mark_orphaned(client=client, actor=actor) is True
    assert client_mark_orphaned(client=client, actor=actor) is False
    assert client_flag_stale(client=client, actor=actor) is True
    assert client_flag_stale(client=client, actor=actor) is False
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "client.orphaned",
        "client.stale",
    ]


def test_idp_disabled_records_overshoot_once():
    expires = timezone.now() - dt.timedelta(seconds=30)
    client = ClientFactory(state=ClientState.EXPIRED, expires_at=expires)
    client_record_idp_disabled(client.pk, expires + dt.timedelta(seconds=42))
    client_record_idp_disabled(client.pk, expires + dt.timedelta(seconds=99))
    client.refresh_from_db()
    assert client.expiry_overshoot_seconds == pytest.approx(42)
    assert client.idp_disabled_at == expires + dt.timedelta(seconds=42)
    retired = ClientFactory(state=ClientState.RETIRED, expires_at=expires)
    client_record_idp_disabled(retired.pk, timezone.now())
    retired.refresh_from_db()
    assert retired.idp_disabled_at is not None and retired.expiry_overshoot_seconds is None


def test_apply_renewal_after_approval_clears_the_stale_flag(owner, approver):
    from inventory.lifecycle import client_apply_renewal

    client = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH, stale_at=timezone.now())
    now = timezone.now()
    client_apply_renewal(client=client, ttl_seconds=10 * 86400, actor=Actor.user(approver), now=now)
    client.refresh_from_db()
    assert client.expires_at == now + dt.timedelta(days=1)  # clamped to the high-tier ceiling
    assert client.stale_at is None and client.renewals == 1
    assert AuditEvent.objects.get().action == "client.renew.approved"
    retired = ClientFactory(owner=owner, state=ClientState.RETIRED)
    with pytest.raises(LifecycleError):
        client_apply_renewal(client=retired, ttl_seconds=3600, actor=Actor.user(approver))
    assert AuditEvent.objects.count() == 1


def test_a_reactivated_owner_reclaims_their_orphaned_client(owner):
    client = ClientFactory(owner=owner, orphaned_at=timezone.now())
    client_take_over(client=client, user=owner, reason="I am back")
    assert Client.objects.get(pk=client.pk).orphaned_at is None
