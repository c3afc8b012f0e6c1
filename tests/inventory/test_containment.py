"""Containment means containment: break glass stops the credential behind the scope, and suspending or ending a
client reaches its descendants.

Regressions (issue 13): rollback by initial access token retired the token's clients but the token kept
working (a new registration got 201 right after); rollback by issuer left the issuer trusted; suspending a
parent left its spawned children active.
"""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from joserfc import jwt
from joserfc.jwk import RSAKey

from approvals.models import InitialAccessToken, RegistrationRequest, TrustedIssuer
from inventory.breakglass import BreakGlassError, breakglass_execute, breakglass_preview
from inventory.choices import ClientState, HoldKind, OutboxOperation
from inventory.containment import client_hold_lift
from inventory.lifecycle import LifecycleError, client_resume, client_suspend, clients_transition_many
from inventory.models import Client, OutboxEntry
from portal.audit import Actor, verify_chain
from portal.models import AuditEvent
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    low_body,
    make_token,
    post,
)
from tests.factories import ClientFactory, TokenFactory

pytestmark = pytest.mark.django_db
ISSUER_KEY = RSAKey.generate_key(2048, parameters={"kid": "bg-1"})


def states(*clients) -> list[str]:
    return [Client.objects.get(pk=c.pk).state for c in clients]


def test_rollback_by_token_revokes_the_token(client, catalogue, idp, owner, security_user):
    """Regression: the token kept working after its clients were rolled back."""
    token, plaintext = make_token(owner)
    first = post(client, low_body(), plaintext)
    pending = post(client, low_body(scope="tickets:write", internal_only=False), plaintext)
    assert (first.status_code, pending.status_code) == (201, 202)

    outcome = breakglass_execute(
        user=security_user, scope="token", value=str(token.pk), action="retire", reason="token pasted in a public issue"
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
    again = post(client, low_body(), plaintext)
    assert again.status_code == 401 and "revoked" in again.json()["error_description"]
    assert RegistrationRequest.objects.get(public_id=pending.json()["registration_id"]).state == "withdrawn"
    assert states(Client.objects.get(registration_id=first.json()["registration_id"])) == [ClientState.RETIRED]
    revoke = AuditEvent.objects.get(action="token.revoke.breakglass")
    assert outcome.decision_id in revoke.reason and revoke.object_id == str(token.pk)
    assert AuditEvent.objects.filter(action="request.withdraw.breakglass").count() == 1
    assert verify_chain()[1] is None


def _statement() -> str:
    now = int(time.time())
    claims = {
        "iss": "https://ci.bg.example",
        "sub": "repo:acme/x:ref:main",
        "aud": "registrar",
        "iat": now,
        "exp": now + 300,
        "jti": f"bg-{time.monotonic_ns()}",
    }
    return jwt.encode({"alg": "RS256", "kid": "bg-1"}, claims, ISSUER_KEY, algorithms=["RS256"])


def test_rollback_by_issuer_disables_the_issuer(client, catalogue, idp, owner, security_user):
    """Regression: the issuer stayed trusted after its clients were rolled back."""
    issuer = TrustedIssuer.objects.create(
        name="ci",
        issuer="https://ci.bg.example",
        audience="registrar",
        jwks={"keys": [ISSUER_KEY.as_dict(private=False)]},
        subject="repo:acme/*",
        owner=owner,
        purpose="ci agents",
        allowed_scopes=["tickets:read"],
    )
    assert post(client, low_body(software_statement=_statement())).status_code == 201
    breakglass_execute(user=security_user, scope="issuer", value="ci", action="suspend", reason="CI compromised")
    issuer.refresh_from_db()
    assert issuer.enabled is False
    refused = post(client, low_body(software_statement=_statement()))
    assert refused.status_code == 400 and refused.json()["error"] == "unapproved_software_statement"
    assert AuditEvent.objects.filter(action="issuer.disable.breakglass", object_id=str(issuer.pk)).count() == 1


def test_break_glass_on_a_lineage_revokes_the_roots_spawn_right(client, catalogue, idp, owner, security_user):
    _, plaintext = make_token(owner)
    root = post(client, low_body(scope="tickets:read docs:read"), plaintext).json()
    child = post(client, low_body(), root["registration_access_token"])
    assert child.status_code == 201
    root_client = Client.objects.get(registration_id=root["registration_id"])
    breakglass_execute(
        user=security_user, scope="lineage", value=root_client.registration_id, action="suspend", reason="runaway agent"
    )
    fresh = Client.objects.get(pk=root_client.pk)
    assert fresh.spawn_revoked_at is not None and "runaway agent" in fresh.spawn_revoked_reason
    client_hold_lift(client=fresh, user=security_user, reason="root is fine, children stay contained")
    refused = post(client, low_body(), root["registration_access_token"])
    assert refused.status_code == 401
    assert "right to spawn children was revoked" in refused.json()["error_description"]
    assert "runaway agent" in refused.json()["error_description"]
    assert Client.objects.filter(parent=root_client).count() == 1


def test_suspending_a_parent_suspends_its_live_descendants(owner):
    """Regression: suspending a parent left its spawned children active."""
    parent = ClientFactory(owner=owner)
    child = ClientFactory(owner=owner, parent=parent, depth=1)
    grandchild = ClientFactory(owner=owner, parent=child, depth=2, state=ClientState.PROVISIONING)
    ended = ClientFactory(owner=owner, parent=parent, depth=1, state=ClientState.RETIRED)
    client_suspend(client=parent, user=owner, reason="pause the family")
    assert states(parent, child, grandchild, ended) == [ClientState.SUSPENDED] * 3 + [ClientState.RETIRED]
    assert sorted(OutboxEntry.objects.values_list("client_id", "operation")) == sorted(
        (c.pk, OutboxOperation.DISABLE) for c in (parent, child, grandchild)
    )
    assert AuditEvent.objects.filter(action="client.suspend.cascade").count() == 2
    assert not Client.objects.exclude(hold_kind="").exists()  # an owner's suspension is no hold


def test_set_based_suspension_cascades_too(owner):
    """Regression: clients_transition_many (sweeps, break glass) did not suspend descendants."""
    parent = ClientFactory(owner=owner)
    child = ClientFactory(owner=owner, parent=parent, depth=1)
    with transaction.atomic():
        locked = list(Client.objects.filter(pk=parent.pk).select_for_update())
        result = clients_transition_many(
            clients=locked, target=ClientState.SUSPENDED, actor=Actor.system("sweep"), reason="orphaned"
        )
    assert result.cascaded == [child.pk]
    assert states(parent, child) == [ClientState.SUSPENDED, ClientState.SUSPENDED]


def test_a_hold_reaches_descendants_already_suspended(owner, admin_user):
    parent = ClientFactory(owner=owner)
    paused = ClientFactory(owner=owner, parent=parent, depth=1, state=ClientState.SUSPENDED)
    grandchild = ClientFactory(owner=owner, parent=paused, depth=2)  # resumed by its owner meanwhile
    client_suspend(client=parent, user=admin_user, reason="admin action")
    fresh = {c.pk: c for c in Client.objects.all()}
    assert fresh[paused.pk].hold_kind == HoldKind.CONTAINMENT and fresh[paused.pk].state == ClientState.SUSPENDED
    assert fresh[grandchild.pk].state == ClientState.SUSPENDED and fresh[grandchild.pk].hold_kind
    assert f"ancestor {parent.registration_id} is held" in fresh[grandchild.pk].hold_reason


def test_preview_says_everything_before_confirming(owner, security_user):
    token = TokenFactory(owner=owner, plaintext="rat_preview_" + "p" * 28, uses=3, max_uses=10)
    made = ClientFactory(owner=owner)
    RegistrationRequest.objects.create(
        public_id="reg_preview_1", via="token", token=token, client=made, owner=owner, state="approved"
    )
    ClientFactory(owner=owner, parent=made, depth=1)
    RegistrationRequest.objects.create(
        public_id="reg_preview_2", via="token", token=token, owner=owner, state="pending"
    )
    preview = breakglass_preview(user=security_user, scope="token", value=token.prefix, action="suspend")
    assert (preview.matched, preview.descendants, preview.affected) == (1, 1, 2)
    assert preview.effects == [
        f"revoke initial access token {token.prefix}…: it can register nothing more (3 of 10 uses spent)",
        "withdraw 1 pending registration request made with it",
    ]
    assert InitialAccessToken.objects.get(pk=token.pk).revoked_at is None  # a preview changes nothing
    lineage = breakglass_preview(user=security_user, scope="lineage", value=made.registration_id, action="retire")
    assert lineage.effects == [
        f"revoke the spawn right of {made.name} ({made.registration_id}): its registration "
        "access token can register no more children (0 spawned so far)"
    ]


def test_break_glass_page_shows_the_effects(client, owner, security_user):
    token = TokenFactory(owner=owner, plaintext="rat_pagepre_" + "q" * 28)
    made = ClientFactory(owner=owner)
    RegistrationRequest.objects.create(
        public_id="reg_page_1", via="token", token=token, client=made, owner=owner, state="approved"
    )
    client.force_login(security_user)
    form = {"scope": "token", "value": str(token.pk), "action": "suspend", "reason": "leak"}
    html = client.post("/inventory/break-glass/", form).content.decode()
    assert 'id="breakglass-effects"' in html and f"revoke initial access token {token.prefix}" in html
    assert 'data-matched="1"' in html and 'data-descendants="0"' in html
    done = client.post("/inventory/break-glass/", form | {"confirm": "yes"}, follow=True).content.decode()
    assert "suspended and held" in done and "Also: revoke initial access token" in done


def test_an_ambiguous_token_prefix_is_refused(owner, security_user):
    for n in (1, 2):
        TokenFactory(owner=owner, plaintext=f"rat_samepfx_{n}" + "z" * 26)
    with pytest.raises(BreakGlassError, match="more than one initial access token; give its id"):
        breakglass_preview(user=security_user, scope="token", value="rat_samepfx_", action="retire")


def test_a_child_does_not_resume_under_a_suspended_parent(owner):
    parent = ClientFactory(owner=owner)
    child = ClientFactory(owner=owner, parent=parent, depth=1)
    client_suspend(client=parent, user=owner, reason="pause the family")
    with pytest.raises(LifecycleError, match=f"its ancestor {parent.name} \\({parent.registration_id}\\) is suspended"):
        client_resume(client=Client.objects.get(pk=child.pk), user=owner)
    client_resume(client=Client.objects.get(pk=parent.pk), user=owner)
    client_resume(client=Client.objects.get(pk=child.pk), user=owner)
    assert states(parent, child) == [ClientState.ACTIVE, ClientState.ACTIVE]
