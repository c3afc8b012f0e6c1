"""One rule in one place: every path that applies a rule reads the one definition, so the paths cannot disagree.

Key sets (``inventory.keys``): RFC 7591 registration, RFC 7592 update and owner key rotation refuse the same key
sets with the same reason (owner rotation once had a laxer copy that accepted a 1024-bit RSA key with a repeated
``kid``). Private JWK members (``portal.censor``): what the validator refuses is what the censor hides. Auth
methods (``inventory.keys``): the metadata validator, the policy and the controls report classify each method
alike. Tier TTL ceilings (``PolicyConfig.ttl_ceilings``): the policy's clamp, the approval fallback and the
limits inventory enforces on renewal are the active policy's.
"""

from __future__ import annotations

import dataclasses

import pytest
from joserfc.jwk import ECKey

from approvals.metadata import AUTH_METHODS, AUTH_STRENGTH, MetadataError, validate_client_metadata
from approvals.policy import PolicyConfig, RegistrationContext, ScopeInfo, evaluate
from approvals.policy_store import active_policy, policy_publish
from approvals.services import request_approve
from inventory import hooks
from inventory.keys import (
    JWKS_METHODS,
    KEY_BASED_METHODS,
    PRIVATE_JWK_MEMBERS,
    SHARED_SECRET_METHODS,
    jwks_problems,
)
from inventory.lifecycle import LifecycleError, client_rotate_key
from inventory.models import Client, OutboxEntry
from inventory.reports import controls
from portal.audit import Actor
from portal.censor import CENSORED, JWK_PRIVATE_MEMBERS, censor
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    call,
    counts,
    low_body,
    make_token,
    path_of,
    post,
)
from tests.factories import ClientFactory, RequestFactory, UserFactory
from tests.inventory.test_keys import BAD_KEY_SETS, _ec, _weak_rsa

pytestmark = pytest.mark.django_db

WEAK_WITH_REPEATED_KID = {"keys": [_weak_rsa() | {"kid": "dup"}, _ec("dup")]}
WEAK_REASONS = ("is a 1024-bit RSA key; at least 2048 bits are required", "repeats kid 'dup'")


# --- key sets: registration, RFC 7592 update and owner rotation -----------------------------------------------


@pytest.fixture
def registered(client, catalogue, idp, owner):
    """An active client registered over RFC 7591: (its RFC 7592 path, registration access token)."""
    plaintext = make_token(owner)[1]
    response = post(client, low_body(scope="tickets:read", requested_ttl=7200), plaintext)
    assert response.status_code == 201, response.content
    body = response.json()
    return path_of(body["registration_client_uri"]), body["registration_access_token"]


def test_registration_update_and_owner_rotation_refuse_a_weak_key_with_a_repeated_kid_alike(
    client, catalogue, idp, owner, registered
):
    plaintext = make_token(owner)[1]
    registration = post(client, low_body(jwks=WEAK_WITH_REPEATED_KID), plaintext)
    assert registration.status_code == 400  # recorded as a refused request, like every refusal
    registration_reason = registration.json()["error_description"]
    before = counts()

    uri, rat = registered
    stored = Client.objects.values("jwks", "metadata").get()
    update = call(
        client, "PUT", uri, rat, low_body(scope="tickets:read", requested_ttl=7200, jwks=WEAK_WITH_REPEATED_KID)
    )
    assert update.status_code == 400, update.content
    assert update.json()["error_description"] == registration_reason
    assert Client.objects.values("jwks", "metadata").get() == stored

    with pytest.raises(LifecycleError) as rotation:
        client_rotate_key(client=Client.objects.get(), user=owner, jwks=WEAK_WITH_REPEATED_KID, reason="rotation")
    assert str(rotation.value) == registration_reason
    assert all(reason in registration_reason for reason in WEAK_REASONS)
    assert Client.objects.values("jwks", "metadata").get() == stored
    assert counts() == before  # neither the update nor the rotation wrote anything


@pytest.mark.parametrize("case", list(BAD_KEY_SETS))
def test_an_rfc7592_update_refuses_what_registration_refuses(client, registered, case):
    make, reason = BAD_KEY_SETS[case]
    uri, rat = registered
    snapshot = Client.objects.values().get()
    response = call(client, "PUT", uri, rat, low_body(scope="tickets:read", requested_ttl=7200, jwks=make()))
    assert response.status_code == 400, response.content
    assert response.json()["error_description"].startswith(reason)
    assert Client.objects.values().get() == snapshot
    assert not AuditEvent.objects.filter(action="client.narrow").exists()
    assert not OutboxEntry.objects.filter(operation="update").exists()


def test_owner_rotation_accepts_what_registration_accepts(owner):
    good = {"keys": [ECKey.generate_key("P-256").as_dict(private=False) | {"kid": "next"}]}
    validate_client_metadata({"purpose": "Summarise tickets", "jwks": good}, allow_shared_secret=False)
    rotated = client_rotate_key(client=ClientFactory(owner=owner), user=owner, jwks=good, reason="rotation")
    assert Client.objects.get(pk=rotated.pk).jwks == good


# --- private JWK members: the validator and the censor ---------------------------------------------------------


@pytest.mark.parametrize("member", sorted(set(PRIVATE_JWK_MEMBERS) | JWK_PRIVATE_MEMBERS))
def test_what_the_key_validator_refuses_as_private_the_censor_hides(member):
    key = _ec("k1") | {member: "c2VjcmV0"}
    assert jwks_problems({"keys": [key]}), f"the validator accepts a key carrying {member!r}"
    assert censor({"jwks": {"keys": [key]}})["jwks"]["keys"][0][member] == CENSORED


# --- auth methods: metadata, policy and the controls report ----------------------------------------------------


def _context(method: str) -> RegistrationContext:
    return RegistrationContext(
        requested_scopes=(),
        catalogue={},
        requested_ttl=None,
        redirect_uris=(),
        application_type="web",
        token_endpoint_auth_method=method,
        internal_only=True,
        owner_active=True,
        owner_live_clients=0,
        via="token",
    )


def test_every_auth_method_is_classified_once():
    assert KEY_BASED_METHODS | SHARED_SECRET_METHODS | {"none"} == AUTH_METHODS
    assert not KEY_BASED_METHODS & SHARED_SECRET_METHODS and JWKS_METHODS <= KEY_BASED_METHODS
    assert set(AUTH_STRENGTH) == AUTH_METHODS
    assert min(AUTH_STRENGTH[m] for m in KEY_BASED_METHODS) > max(AUTH_STRENGTH[m] for m in SHARED_SECRET_METHODS)


@pytest.mark.parametrize("method", sorted(SHARED_SECRET_METHODS))
def test_a_shared_secret_method_is_refused_by_metadata_and_policy_and_failed_by_the_report(method, owner, idp):
    with pytest.raises(MetadataError, match="uses a shared secret"):
        validate_client_metadata(
            {"purpose": "Summarise tickets", "token_endpoint_auth_method": method}, allow_shared_secret=False
        )
    verdict = evaluate(_context(method), PolicyConfig(version=1))
    assert [r.code for r in verdict.reasons] == ["shared_secret_forbidden"]
    ClientFactory(owner=owner, idp=idp, auth_method=method, state="active")
    population, failing = controls.control_conditions("no_shared_secret")
    assert Client.objects.filter(population).filter(failing).count() == 1
    population, failing = controls.control_conditions("key_based_auth")
    assert Client.objects.filter(population).filter(failing).count() == 1


@pytest.mark.parametrize("method", sorted(KEY_BASED_METHODS))
def test_a_key_based_method_is_not_a_medium_risk_signal(method):
    verdict = evaluate(_context(method), PolicyConfig(version=1))
    assert "not_key_based_auth" not in [r.code for r in verdict.reasons]
    assert verdict.tier == "low"


# --- tier TTL ceilings: the active policy's, everywhere -----------------------------------------------------------


CEILINGS = {"low_ttl_seconds": 1800, "medium_ttl_seconds": 5400, "high_ttl_seconds": 900}
DEFAULTS = PolicyConfig(version=1).to_dict()


def test_the_limits_inventory_enforces_are_the_active_policys_ceilings():
    policy_publish(thresholds=DEFAULTS | CEILINGS, actor=Actor.system("test"), note="short lifetimes")
    config = active_policy(use_cache=False)
    assert config.ttl_ceilings == {"low": 1800, "medium": 5400, "high": 900}
    limits = hooks.policy_limits()
    assert {tier: limits.ttl_ceiling(tier) for tier in ("low", "medium", "high")} == config.ttl_ceilings
    assert config.ttl_ceiling("unknown") == 900  # the strictest


@pytest.mark.parametrize(("scopes", "tier"), [((), "low"), (("tickets:read", "a", "b", "c"), "medium")])
def test_the_policy_clamps_to_the_ceiling_of_its_version(scopes, tier):
    config = PolicyConfig(version=2, **CEILINGS)
    catalogue = {name: ScopeInfo(name, "low") for name in scopes}
    ctx = dataclasses.replace(_context("private_key_jwt"), requested_scopes=scopes, catalogue=catalogue)
    verdict = evaluate(dataclasses.replace(ctx, requested_ttl=86400), config)
    assert verdict.tier == tier and verdict.ttl_seconds == config.ttl_ceiling(tier) == config.ttl_ceilings[tier]


def test_an_approval_without_a_lifetime_gets_the_active_policys_tier_ceiling(idp, catalogue):
    policy_publish(thresholds=DEFAULTS | CEILINGS, actor=Actor.system("test"), note="short lifetimes")
    owner = UserFactory(username="requester")
    approver = UserFactory(username="bob", roles=["approver"])
    pending = RequestFactory(
        owner=owner, idp=idp, risk_tier="medium", approvals_needed=1, granted_ttl=None, requested_ttl=None
    )
    approved = request_approve(reg_request=pending, approver=approver, reason="")
    assert approved.granted_ttl == 5400
    assert approved.client.ceiling_ttl_seconds == 5400
