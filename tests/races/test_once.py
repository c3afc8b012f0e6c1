"""Only-once rules, raced over HTTP: decisions, token rotation, lifecycle moves, pending-per-client rules,
revocation, retries, directory uniqueness and policy versions.

Each test fires one barrier-synchronised burst at the multi-process server and asserts that exactly one call
won, that every other call was refused with an answer (never a server error), and that the audit trail holds
exactly one event for the one change.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.choices import DecisionKind, RequestState
from approvals.models import Decision, InitialAccessToken, Policy, RegistrationRequest
from inventory.choices import ClientState, OutboxOperation, OutboxStatus, RiskTier
from inventory.models import Client, OutboxEntry, TransferOffer, TransferState
from portal.models import User
from tests.provisioning import markers_at_idp
from tests.races.harness import Call, api_token, bearer, wait_until
from tests.races.support import RACE, REGISTER, actions, body

pytestmark = RACE

DECISIONS = ["request.approve", "request.approved", "request.deny", "request.withdraw"]


def approve(public_id: str, token: str) -> Call:
    return Call(
        "POST", f"/api/v1/requests/{public_id}/approve/", json={"reason": "fine by me"}, headers=api_token(token)
    )


def deny(public_id: str, token: str) -> Call:
    return Call("POST", f"/api/v1/requests/{public_id}/deny/", json={"reason": "not needed"}, headers=api_token(token))


# --- decisions ---------------------------------------------------------------------------------------------


def test_four_eyes_one_approver_counts_once_however_often_they_click(race_server, world):
    request = world.pending(world.owner(), tier="high")
    token = world.api_token(world.user("approver"))

    answers = race_server.burst_same(approve(request.public_id, token), 16)

    assert answers.count(200) == 1, answers
    assert answers.count(409) == 15, answers
    request.refresh_from_db()
    assert request.state == RequestState.PENDING and request.client_id is None  # still needs a second person
    assert Decision.objects.filter(request=request).count() == 1
    assert actions(object_id=request.public_id, action__in=DECISIONS) == Counter({"request.approve": 1})


@pytest.mark.parametrize("tier", [RiskTier.MEDIUM, RiskTier.HIGH])
def test_approvals_and_denials_by_two_approvers_at_once_end_in_one_consistent_decision(race_server, world, tier):
    request = world.pending(world.owner(), tier=tier)
    tokens = [world.api_token(world.user("approver")) for _ in range(2)]
    calls = [(approve if i % 2 else deny)(request.public_id, tokens[i // 2 % 2]) for i in range(16)]

    answers = race_server.burst(calls)

    request.refresh_from_db()
    decisions = list(Decision.objects.filter(request=request).order_by("created_at"))
    assert answers.count(200) == len(decisions), answers
    assert answers.count(409) == 16 - len(decisions), answers
    assert len({d.approver_id for d in decisions}) == len(decisions)  # nobody decided twice
    trail = actions(object_id=request.public_id, action__in=DECISIONS)
    if request.state == RequestState.APPROVED:
        assert [d.kind for d in decisions] == [DecisionKind.APPROVE] * request.approvals_needed
        assert Client.objects.filter(registration_id=request.public_id).count() == 1
        assert trail == Counter({"request.approved": 1, "request.approve": request.approvals_needed - 1})
    else:
        assert request.state == RequestState.DENIED, request.state
        assert [d.kind for d in decisions][-1] == DecisionKind.DENY
        assert [d.kind for d in decisions][:-1] == [DecisionKind.APPROVE] * (len(decisions) - 1)
        assert request.client_id is None and not Client.objects.filter(registration_id=request.public_id).exists()
        assert trail == Counter({"request.deny": 1, "request.approve": len(decisions) - 1})


def test_the_owner_withdrawing_while_approvers_approve_ends_the_request_once(race_server, world):
    owner = world.owner()
    request = world.pending(owner)
    token = world.api_token(world.user("approver"))
    person = world.person(owner)
    withdraw = person.post(f"/approvals/mine/{request.public_id}/withdraw/", {"reason": "not needed after all"})

    race_server.burst([approve(request.public_id, token) if i % 2 else withdraw for i in range(16)])

    request.refresh_from_db()
    assert request.state in (RequestState.APPROVED, RequestState.WITHDRAWN)
    trail = actions(object_id=request.public_id, action__in=DECISIONS)
    assert sum(trail.values()) == 1, trail
    made = Client.objects.filter(registration_id=request.public_id).count()
    assert made == (1 if request.state == RequestState.APPROVED else 0)


# --- registration access tokens (RFC 7592) -----------------------------------------------------------------


def test_a_registration_access_token_rotates_once_at_a_time_and_the_current_one_works(race_server, world):
    """16 reads with one token at once: each is served (the first rotates, the others find the token the
    previous one inside its grace: approvals.oauth2.rat), the rotations are serialised, exactly one of the new
    tokens is current and works, and once it has been used the old token is a reuse."""
    from approvals.models import RegistrationRequest
    from portal.crypto import hash_token

    client, path, rat = world.registration(world.owner())

    answers = race_server.burst_same(Call("GET", path, headers=bearer(rat)), 16)

    assert answers.count(200, 202) == 16, answers
    issued = [a.json["registration_access_token"] for a in answers.with_status(200, 202)]
    assert len(set(issued)) == 16 and rat not in issued
    reg = RegistrationRequest.objects.get(public_id=client.registration_id)
    assert reg.rat_previous_hash == hash_token(rat)
    current = [t for t in issued if hash_token(t) == reg.registration_access_token_hash]
    assert len(current) == 1
    assert race_server.call(Call("GET", path, headers=bearer(current[0]))).status in (200, 202)
    assert race_server.call(Call("GET", path, headers=bearer(rat))).status == 401


def test_an_rfc7592_update_with_one_token_applies_once(race_server, world):
    client, path, rat = world.registration(world.owner())
    narrowed = body(client.name, scope="tickets:read", requested_ttl=1800)
    outbox_before = OutboxEntry.objects.filter(client=client, operation=OutboxOperation.UPDATE).count()

    answers = race_server.burst_same(Call("PUT", path, json=narrowed, headers=bearer(rat)), 16)

    assert answers.count(200) == 1, answers
    assert answers.count(401) == 15, answers
    assert actions(object_id=client.registration_id, action="client.narrow") == Counter({"client.narrow": 1})
    assert OutboxEntry.objects.filter(client=client, operation=OutboxOperation.UPDATE).count() == outbox_before + 1


def test_an_rfc7592_delete_retires_once(race_server, world):
    client, path, rat = world.registration(world.owner())

    answers = race_server.burst_same(Call("DELETE", path, headers=bearer(rat)), 16)

    assert answers.count(204) == 1, answers
    assert answers.count(401) == 15, answers
    client.refresh_from_db()
    assert client.state == ClientState.RETIRED
    assert actions(object_id=client.registration_id, action="client.retired") == Counter({"client.retired": 1})
    assert OutboxEntry.objects.filter(client=client, operation=OutboxOperation.DELETE).count() == 1


# --- one pending thing per client --------------------------------------------------------------------------


def test_one_pending_renewal_per_client(race_server, world):
    owner = world.owner()
    (client,) = world.clients(owner, 1, risk_tier=RiskTier.HIGH, idp=race_server.idp)
    person = world.person(owner)

    race_server.burst_same(person.post(f"/inventory/mine/{client.registration_id}/renew/"), 16)

    renewals = RegistrationRequest.objects.filter(client=client, kind="renewal")
    assert renewals.count() == 1 and renewals.get().state == RequestState.PENDING
    assert actions(object_id=client.registration_id, action="client.renewal_requested") == Counter(
        {"client.renewal_requested": 1}
    )


def test_one_pending_transfer_offer_per_client(race_server, world):
    owner = world.owner()
    (client,) = world.clients(owner, 1)
    recipients = [world.user("owner") for _ in range(16)]
    person = world.person(owner)

    race_server.burst(
        [
            person.post(
                f"/inventory/mine/{client.registration_id}/transfer/",
                {"username": r.username, "reason": "handing over"},
            )
            for r in recipients
        ]
    )

    assert TransferOffer.objects.filter(client=client).count() == 1
    assert TransferOffer.objects.get(client=client).state == TransferState.PENDING
    assert actions(object_id=client.registration_id, action="client.transfer_offer") == Counter(
        {"client.transfer_offer": 1}
    )


def test_a_transfer_offer_is_accepted_or_declined_once(race_server, world):
    giver, taker = world.owner(), world.owner()
    (client,) = world.clients(giver, 1)
    offer = TransferOffer.objects.create(client=client, from_user=giver, to_user=taker, offered_by=giver)
    person = world.person(taker)

    race_server.burst(
        [person.post(f"/inventory/transfers/{offer.pk}/{'accept' if i % 2 else 'decline'}/") for i in range(16)]
    )

    offer.refresh_from_db()
    client.refresh_from_db()
    assert offer.state in (TransferState.ACCEPTED, TransferState.DECLINED)
    assert client.owner_id == (taker.pk if offer.state == TransferState.ACCEPTED else giver.pk)
    trail = actions(object_id=client.registration_id, action__in=["client.transfer_accept", "client.transfer_decline"])
    assert sum(trail.values()) == 1, trail


# --- revocation, retries -------------------------------------------------------------------------------------


def test_a_token_is_revoked_once(race_server, world):
    owner = world.owner()
    token, _ = world.token(owner)
    person = world.person(owner)

    race_server.burst_same(person.post(f"/tokens/{token.pk}/revoke", {"reason": "leaked"}), 16)

    assert InitialAccessToken.objects.get(pk=token.pk).revoked_at is not None
    assert actions(object_type="initial_access_token", object_id=str(token.pk), action="token.revoke") == Counter(
        {"token.revoke": 1}
    )


def test_dead_deliveries_are_retried_once_and_each_client_created_once(race_server, world):
    """An admin's Retry clicked 4 times at once on each of 4 dead deliveries: one retry each, and the IdP gets
    each client exactly once."""
    from inventory.services import client_create
    from portal.audit import Actor

    owner = world.owner()
    clients = [
        client_create(
            actor=Actor.system("race"),
            idp=race_server.idp,
            name=world.name("dead"),
            owner=owner,
            purpose="a delivery that died",
            scopes=["tickets:read"],
            internal_only=True,
            expires_at=timezone.now() + timedelta(hours=2),
            jwks=body("x")["jwks"],
        )
        for _ in range(4)
    ]  # this process has no broker (memory://): nothing is delivered meanwhile
    OutboxEntry.objects.filter(client__in=clients).update(status=OutboxStatus.DEAD, attempts=8, last_error="gave up")
    entries = list(OutboxEntry.objects.filter(client__in=clients).order_by("pk"))
    admin = world.person(world.user("admin", is_staff=True, is_superuser=True))

    race_server.burst(
        [admin.post(f"/inventory/sync-failures/{entry.pk}/retry/") for entry in entries for _ in range(4)]
    )

    ids = [c.registration_id for c in clients]
    assert actions(object_id__in=ids, action="outbox.retry") == Counter({"outbox.retry": len(clients)})
    wait_until(
        lambda: Client.objects.filter(pk__in=[c.pk for c in clients], state=ClientState.ACTIVE).count() == 4,
        what="the retried clients to be created at the IdP",
    )
    markers = markers_at_idp(race_server.idp_process)
    assert [markers[i] for i in ids] == [1] * len(ids)
    assert actions(object_id__in=ids, action="client.active") == Counter({"client.active": len(clients)})


# --- directory and policy ------------------------------------------------------------------------------------


def test_the_directory_creates_a_person_once(race_server, world):
    username = world.name("hire")
    scim = Call(
        "POST",
        "/scim/v2/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": username,
            "externalId": f"ext-{username}",
            "emails": [{"value": f"{username}@example.com", "primary": True}],
            "active": True,
        },
        headers={"Authorization": f"Bearer {race_server.scim_token}", "Content-Type": "application/scim+json"},
    )

    answers = race_server.burst_same(scim, 16)

    assert answers.count(201) == 1, answers
    assert answers.count(409) == 15, answers
    user = User.objects.get(username=username)
    assert actions(object_type="user", object_id=str(user.pk), action="user.create") == Counter({"user.create": 1})


def test_policy_versions_published_at_once_are_consecutive_with_one_active(race_server, world):
    import json

    from approvals.policy import PolicyConfig

    admin = world.person(world.user("admin", is_staff=True, is_superuser=True))
    active = Policy.objects.get(is_active=True)
    same = PolicyConfig.from_dict(active.thresholds, active.version).to_dict()  # the other races rely on them
    before = Policy.objects.count()
    form = {"thresholds": json.dumps(same), "note": "same thresholds, published again", "_save": "Save"}

    answers = race_server.burst_same(admin.post("/admin/approvals/policy/add/", form), 16)

    assert answers.count(302) == 16, answers
    versions = list(Policy.objects.order_by("version").values_list("version", flat=True))
    assert versions == list(range(versions[0], versions[0] + before + 16))
    assert Policy.objects.filter(is_active=True).count() == 1
    assert Policy.objects.get(is_active=True).version == versions[-1]
    assert actions(action="policy.publish", object_id__in=[str(v) for v in versions[before:]]) == Counter(
        {"policy.publish": 16}
    )


# --- a software statement's jti: accepted once ------------------------------------------------------------------


def test_a_software_statement_registers_once(race_server, world):
    """16 registrations carrying one signed statement at once: the (issuer, jti) unique constraint, written in the
    same statement as the registration, lets exactly one in; the others are 400 invalid_software_statement."""
    from approvals.models import SoftwareStatementUse, TrustedIssuer
    from tests.approvals.test_statements import AUDIENCE, ISSUER, ISSUER_KEY, sign

    owner = world.owner()
    rule = TrustedIssuer.objects.create(
        name=world.name("ci"),
        kind="oidc",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks={"keys": [ISSUER_KEY.as_dict(private=False)]},
        subject="repo:acme/agents:*",
        owner=owner,
        purpose="CI agents of acme/agents",
        allowed_scopes=["tickets:read"],
        max_ttl_seconds=3600,
        internal_only=True,
    )
    jti = world.name("jti")
    statement = sign({"scope": "tickets:read"}, jti=jti)
    call = Call("POST", REGISTER, json=body("ci-agent", software_statement=statement))

    answers = race_server.burst_same(call, 16)

    assert answers.count(201, 202) == 1, answers
    assert answers.count(400) == 15, answers
    for refused in answers.with_status(400):
        assert refused.json["error"] == "invalid_software_statement"
        assert (
            f"software statement jti '{jti}' of issuer '{ISSUER}' was already used" in refused.json["error_description"]
        )
    assert SoftwareStatementUse.objects.filter(jti=jti).count() == 1
    assert RegistrationRequest.objects.filter(issuer=rule).exclude(state=RequestState.REFUSED).count() == 1
