"""Break glass: preview counts, execute as one decision with many effects, every scope, permissions."""

from __future__ import annotations

from collections import Counter

import pytest

from inventory.breakglass import BreakGlassError, breakglass_execute, breakglass_preview
from inventory.choices import ClientState, OutboxOperation
from inventory.lifecycle import PermissionRefused
from inventory.models import Client, OutboxEntry
from portal.audit import verify_chain
from portal.models import AuditEvent
from tests.factories import ClientFactory, IdPFactory, RequestFactory, TeamFactory, TokenFactory, UserFactory

pytestmark = pytest.mark.django_db


def states(clients):
    return [Client.objects.get(pk=c.pk).state for c in clients]


def test_preview_counts_then_execute_suspends_with_one_decision(security_user):
    leaker = UserFactory(username="leaker")
    active = [ClientFactory(owner=leaker) for _ in range(3)]
    # A client still being created is suspended too (its DISABLE follows its CREATE): containment means
    # nothing in scope becomes active afterwards. One its owner suspended gets the hold.
    provisioning = ClientFactory(owner=leaker, state=ClientState.PROVISIONING, idp_client_id=None)
    owner_suspended = ClientFactory(owner=leaker, state=ClientState.SUSPENDED)
    ClientFactory(owner=leaker, state=ClientState.RETIRED)
    other = ClientFactory()
    preview = breakglass_preview(user=security_user, scope="owner", value="leaker", action="suspend")
    assert (preview.total, preview.affected, preview.to_hold, preview.unaffected) == (5, 4, 1, 0)
    assert AuditEvent.objects.count() == 0 and OutboxEntry.objects.count() == 0  # preview changes nothing

    outcome = breakglass_execute(
        user=security_user, scope="owner", value="leaker", action="suspend", reason="credential leak INC-42"
    )
    assert outcome.count == 4 and outcome.held == [owner_suspended.pk]
    assert states([*active, provisioning, owner_suspended]) == [ClientState.SUSPENDED] * 5
    assert states([other]) == [ClientState.ACTIVE]
    held = Client.objects.filter(owner=leaker, state=ClientState.SUSPENDED)
    assert {(c.hold_kind, c.hold_by_id, c.hold_ref) for c in held} == {
        ("break_glass", security_user.pk, outcome.decision_id)
    }
    decision = AuditEvent.objects.get(action="breakglass.suspend")
    assert decision.object_id == outcome.decision_id and decision.reason == "credential leak INC-42"
    assert decision.after["count"] == 5 and sorted(decision.after["clients"]) == sorted(
        c.registration_id for c in [*active, provisioning, owner_suspended]
    )
    per_client = AuditEvent.objects.filter(action="client.suspend.breakglass")
    assert per_client.count() == 4 and all(outcome.decision_id in e.reason for e in per_client)
    assert AuditEvent.objects.get(action="client.hold.breakglass").object_id == owner_suspended.registration_id
    assert Counter(OutboxEntry.objects.values_list("operation", flat=True)) == {OutboxOperation.DISABLE: 4}
    assert verify_chain()[1] is None


def test_retire_a_lineage_subtree(admin_user):
    root = ClientFactory()
    child = ClientFactory(parent=root, depth=1, owner=root.owner)
    grandchild = ClientFactory(parent=child, depth=2, owner=root.owner, state=ClientState.SUSPENDED)
    sibling = ClientFactory(owner=root.owner)
    preview = breakglass_preview(user=admin_user, scope="lineage", value=child.registration_id, action="retire")
    assert preview.affected == 2
    breakglass_execute(user=admin_user, scope="lineage", value=child.registration_id, action="retire", reason="bad")
    assert states([root, child, grandchild, sibling]) == [
        ClientState.ACTIVE,
        ClientState.RETIRED,
        ClientState.RETIRED,
        ClientState.ACTIVE,
    ]
    assert Counter(OutboxEntry.objects.values_list("operation", flat=True)) == {OutboxOperation.DELETE: 2}


def test_token_rollback_includes_spawned_children(admin_user):
    token = TokenFactory()
    made = [ClientFactory(owner=token.owner) for _ in range(2)]
    for c in made:
        RequestFactory(token=token, client=c, owner=token.owner, state="approved")
    spawned = ClientFactory(parent=made[0], depth=1, owner=token.owner)
    unrelated = ClientFactory(owner=token.owner)
    preview = breakglass_preview(user=admin_user, scope="token", value=token.prefix, action="retire")
    assert preview.affected == 3
    breakglass_execute(user=admin_user, scope="token", value=str(token.pk), action="retire", reason="token leaked")
    assert states([*made, spawned, unrelated]) == [ClientState.RETIRED] * 3 + [ClientState.ACTIVE]


@pytest.mark.parametrize("scope", ["team", "idp", "policy", "issuer"])
def test_other_scopes(admin_user, scope):
    team = TeamFactory(slug="blast")
    idp = IdPFactory(name="blast-idp")
    from approvals.models import TrustedIssuer

    issuer = TrustedIssuer.objects.create(
        name="ci",
        issuer="https://ci.example",
        audience="registrar",
        subject="repo:*",
        owner=UserFactory(),
        purpose="ci",
    )
    inside = ClientFactory(team=team, idp=idp, policy_version=7)
    RequestFactory(issuer=issuer, client=inside, policy_version=7, state="approved")
    outside = ClientFactory(policy_version=6)
    value = {"team": "blast", "idp": "blast-idp", "policy": "7", "issuer": str(issuer.pk)}[scope]
    assert breakglass_preview(user=admin_user, scope=scope, value=value, action="suspend").affected == 1
    breakglass_execute(user=admin_user, scope=scope, value=value, action="suspend", reason="r")
    assert states([inside, outside]) == [ClientState.SUSPENDED, ClientState.ACTIVE]


def test_refusals_change_nothing(owner, security_user):
    ClientFactory(owner=owner)
    with pytest.raises(PermissionRefused):
        breakglass_preview(user=owner, scope="owner", value=owner.username, action="retire")
    with pytest.raises(PermissionRefused):
        breakglass_execute(user=owner, scope="owner", value=owner.username, action="retire", reason="x")
    for kwargs in (
        {"scope": "owner", "value": "nobody"},
        {"scope": "planet", "value": "x"},
        {"scope": "policy", "value": "seven"},
        {"scope": "owner", "value": ""},
    ):
        with pytest.raises(BreakGlassError):
            breakglass_execute(user=security_user, action="retire", reason="x", **kwargs)
    with pytest.raises(BreakGlassError, match="reason"):
        breakglass_execute(user=security_user, scope="owner", value=owner.username, action="retire", reason=" ")
    with pytest.raises(BreakGlassError):
        breakglass_execute(user=security_user, scope="owner", value=owner.username, action="nuke", reason="x")
    assert set(Client.objects.values_list("state", flat=True)) == {ClientState.ACTIVE}
    assert AuditEvent.objects.count() == 0 and OutboxEntry.objects.count() == 0


def test_break_glass_page_previews_before_confirming(client, security_user, owner):
    ClientFactory(owner=owner)
    ClientFactory(owner=owner)
    client.force_login(security_user)
    assert client.get("/inventory/break-glass/").status_code == 200
    form = {"scope": "owner", "value": owner.username, "action": "retire", "reason": "leak"}
    preview = client.post("/inventory/break-glass/", form)
    html = preview.content.decode()
    assert 'data-affected="2"' in html and "data-confirm=" in html
    assert Client.objects.filter(state=ClientState.ACTIVE).count() == 2
    done = client.post("/inventory/break-glass/", form | {"confirm": "yes"}, follow=True)
    assert "2 client(s)" in done.content.decode()
    assert Client.objects.filter(state=ClientState.RETIRED).count() == 2
    bad = client.post("/inventory/break-glass/", form | {"value": "nobody"})
    assert "no owner matches" in bad.content.decode()


def test_break_glass_page_is_for_admin_and_security(client, owner):
    client.force_login(owner)
    assert client.get("/inventory/break-glass/").status_code == 403
