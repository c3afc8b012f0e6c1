"""Lifecycle policies: rules validated and versioned, issues flagged and resolved, what-if = enforcement, each
action once with one audit event after the grace (time travel through ``now``), attestation single and bulk."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from inventory.choices import ClientState, HoldKind, RiskTier
from inventory.lifecycle import LifecycleError, PermissionRefused
from inventory.lifecycle_policies import (
    LifecyclePolicyError,
    active_lifecycle_rules,
    client_attest,
    clients_attest,
    enforce,
    flag_issues,
    lifecycle_policy_publish,
    lifecycle_policy_restore,
    parse_rules,
    preview,
    run_lifecycle_policies,
)
from inventory.models import Client, ComplianceIssue, LifecyclePolicy
from portal.audit import Actor
from portal.models import AuditEvent
from tests.factories import ClientFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db
ADMIN = Actor.system("test")


def aged(client, *, days, field="created_at"):
    """Move a client's clock back (its creation, activation, attestation or last use)."""
    when = timezone.now() - timedelta(days=days)
    Client.objects.filter(pk=client.pk).update(**{field: when})
    return when


def publish(**rules):
    base = {
        "attestation": {"enabled": True, "days": {"high": 30, "medium": 90, "low": 180}, "grace_days": 7},
        "inactivity": {"enabled": False, "days": 90},
        "sponsors": {"enabled": False},
    }
    monitor_only = rules.pop("monitor_only", False)
    for name, overrides in rules.items():
        base[name] = {**base[name], **overrides}
    lifecycle_policy_publish(actor=ADMIN, rules=base, monitor_only=monitor_only)
    return active_lifecycle_rules()


def test_defaults_by_tier_and_monitor_only_until_published():
    rules = active_lifecycle_rules()
    assert rules.version == 0 and rules.monitor_only
    assert dict(rules.attestation.days_by_tier) == {"high": 30, "medium": 90, "low": 180}


def test_rules_validated_every_problem_named():
    with pytest.raises(LifecyclePolicyError) as refused:
        parse_rules(
            {
                "attestation": {"days": {"high": 0, "low": 10}, "grace_days": 31, "action": "explode"},
                "inactivity": {"days": 90, "scope": {"tiers": ["huge"]}},
                "sponsor": {},
            }
        )
    text = str(refused.value)
    for expected in (
        "attestation.days.high",
        "one entry for each",
        "attestation.grace_days",
        "attestation.action",
        "inactivity.scope.tiers",
        "unknown rule 'sponsor'",
    ):
        assert expected in text


def test_publish_versions_audited_and_restorable():
    v1 = lifecycle_policy_publish(actor=ADMIN, rules={}, monitor_only=True, note="start")
    v2 = lifecycle_policy_publish(
        actor=ADMIN, rules={"attestation": {"days": {"high": 10, "medium": 20, "low": 30}}}, monitor_only=False
    )
    assert (v1.version, v2.version) == (1, 2)
    assert list(LifecyclePolicy.objects.filter(is_active=True).values_list("version", flat=True)) == [2]
    assert active_lifecycle_rules().attestation.days_for("high") == 10
    v3 = lifecycle_policy_restore(actor=ADMIN, version=1)
    assert v3.version == 3 and v3.monitor_only and active_lifecycle_rules().attestation.days_for("high") == 30
    events = AuditEvent.objects.filter(action="lifecycle_policy.publish").order_by("id")
    assert [e.object_id for e in events] == ["1", "2", "3"]
    assert events[1].before["version"] == 1 and events[2].reason == "restored from v1"


@pytest.mark.parametrize("action", ["notify", "suspend", "retire"])
def test_unattested_past_grace_acted_on_once_with_one_event(action, owner, django_capture_on_commit_callbacks):
    owner.email = "olivia@example.com"
    owner.save()
    high = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    fresh = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    low = ClientFactory(owner=owner, risk_tier=RiskTier.LOW)
    aged(high, days=31)
    aged(low, days=100)  # low tier: 180 days, not due
    rules = publish(attestation={"action": action})
    now = timezone.now()

    assert flag_issues(rules, now=now).flagged["attestation"] == 1
    issue = ComplianceIssue.objects.get()
    assert issue.client_id == high.pk and issue.action == action
    assert issue.action_due_at == now + timedelta(days=7)  # grace runs from the flag, not from long ago
    # inside the grace: nothing happens
    assert enforce(rules, now=now + timedelta(days=6)).total == 0
    high.refresh_from_db()
    assert high.state == ClientState.ACTIVE
    # grace passes: the action, once
    later = now + timedelta(days=8)
    flag_issues(rules, now=later)
    with django_capture_on_commit_callbacks(execute=True):
        first = enforce(rules, now=later)
    again = enforce(rules, now=later + timedelta(days=1))
    assert first.total == 1 and again.total == 0
    high.refresh_from_db()
    fresh.refresh_from_db()
    issue.refresh_from_db()
    assert issue.acted_at == later and fresh.state == ClientState.ACTIVE
    expected_event = {
        "notify": "client.compliance_notify",
        "suspend": "client.policy_suspend",
        "retire": "client.policy_retire",
    }
    assert AuditEvent.objects.filter(object_id=high.registration_id, action=expected_event[action]).count() == 1
    if action == "notify":
        assert high.state == ClientState.ACTIVE
        assert len(mail.outbox) == 1 and mail.outbox[0].to == ["olivia@example.com"]
        assert high.registration_id in mail.outbox[0].body and "/inventory/mine/attest/" in mail.outbox[0].body
    elif action == "suspend":
        assert high.state == ClientState.SUSPENDED and high.hold_kind == HoldKind.POLICY
        assert "attestation" in high.hold_reason
    else:
        assert high.state == ClientState.RETIRED
    if action != "notify":
        assert len(mail.outbox) == 0
    assert not AuditEvent.objects.filter(object_id=fresh.registration_id, action__startswith="client.policy").exists()


def test_monitor_only_flags_but_never_acts(owner):
    client = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    aged(client, days=60)
    rules = publish(attestation={"action": "retire"}, monitor_only=True)
    now = timezone.now()
    assert flag_issues(rules, now=now).flagged["attestation"] == 1
    assert enforce(rules, now=now + timedelta(days=60)).total == 0
    client.refresh_from_db()
    assert client.state == ClientState.ACTIVE
    assert ComplianceIssue.objects.get().acted_at is None


def test_attesting_resolves_the_issue_and_restarts_the_clock(owner):
    client = ClientFactory(owner=owner, risk_tier=RiskTier.MEDIUM)
    aged(client, days=91)
    rules = publish(attestation={"action": "suspend"})
    now = timezone.now()
    flag_issues(rules, now=now)
    client_attest(client=client, user=owner, note="still runs the nightly export")
    issue = ComplianceIssue.objects.get()
    assert issue.resolved_at is not None and issue.resolution == "attested"
    assert enforce(rules, now=now + timedelta(days=30)).total == 0
    assert flag_issues(rules, now=now + timedelta(days=30)).flagged["attestation"] == 0
    # due again 90 days after the attestation
    assert flag_issues(rules, now=now + timedelta(days=91)).flagged["attestation"] == 1
    event = AuditEvent.objects.get(action="client.attest")
    assert event.reason == "still runs the nightly export" and event.after["resolved_issue"] is True


def test_attest_permissions_and_bulk(owner):
    mine = [ClientFactory(owner=owner) for _ in range(3)]
    theirs = ClientFactory(owner=UserFactory(username="someone-else", roles=["owner"]))
    ended = ClientFactory(owner=owner, state=ClientState.RETIRED)
    with pytest.raises(PermissionRefused):
        client_attest(client=theirs, user=owner)
    with pytest.raises(LifecycleError):
        client_attest(client=ended, user=owner)
    ids = [c.registration_id for c in mine] + [theirs.registration_id, ended.registration_id, "reg_missing"]
    result = clients_attest(registration_ids=ids, user=owner)
    assert result.attested == [c.registration_id for c in mine]
    assert set(result.refused) == {theirs.registration_id, ended.registration_id, "reg_missing"}
    assert Client.objects.filter(attested_by=owner).count() == 3
    assert AuditEvent.objects.filter(action="client.attest").count() == 3


def test_issue_resolved_when_no_longer_flagged_and_rule_disabled(owner):
    client = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    aged(client, days=40)
    now = timezone.now()
    flag_issues(publish(), now=now)
    # a new version gives high tier 60 days: the client is compliant again
    flag_issues(publish(attestation={"days": {"high": 60, "medium": 90, "low": 180}}), now=now)
    assert ComplianceIssue.objects.get().resolution == "compliant"
    aged(client, days=70)
    flag_issues(publish(), now=now)
    flag_issues(publish(attestation={"enabled": False}), now=now)
    assert list(ComplianceIssue.objects.order_by("id").values_list("resolution", flat=True)) == [
        "compliant",
        "rule disabled",
    ]


def test_inactivity_from_reported_use(owner):
    unused = ClientFactory(owner=owner)
    used = ClientFactory(owner=owner)
    never = ClientFactory(owner=owner)
    aged(unused, days=100, field="last_used_at")
    aged(unused, days=200)
    aged(used, days=200)
    aged(used, days=3, field="last_used_at")
    aged(never, days=95)  # never used: counted from creation
    rules = publish(attestation={"enabled": False}, inactivity={"enabled": True, "days": 90, "action": "suspend"})
    now = timezone.now()
    assert flag_issues(rules, now=now).flagged["inactivity"] == 2
    assert set(ComplianceIssue.objects.values_list("client_id", flat=True)) == {unused.pk, never.pk}
    # use arrives for one of them: its issue resolves before the grace ends
    Client.objects.filter(pk=never.pk).update(last_used_at=now)
    later = now + timedelta(days=15)
    flag_issues(rules, now=later)
    assert enforce(rules, now=later).total == 1
    unused.refresh_from_db()
    never.refresh_from_db()
    assert unused.hold_kind == HoldKind.POLICY and never.state == ClientState.ACTIVE


def test_stale_is_the_inactivity_rule_set_once_cleared_on_use_and_renewal_reviews_it(owner):
    """One rule for "unused": the inactivity rule keeps stale_at (the age-based stale sweep is gone)."""
    from inventory.lifecycle import renewal_review_reasons
    from inventory.sweeps import sweeps_available

    assert "stale" not in sweeps_available()
    unused, used = ClientFactory(owner=owner), ClientFactory(owner=owner)
    for client in (unused, used):
        aged(client, days=200)
        aged(client, days=200, field="activated_at")
    aged(used, days=3, field="last_used_at")
    rules = publish(attestation={"enabled": False}, inactivity={"enabled": True, "days": 90, "grace_days": 14})
    now = timezone.now()
    run_lifecycle_policies(now=now)
    unused.refresh_from_db()
    assert unused.stale_at == now and Client.objects.get(pk=used.pk).stale_at is None
    assert "flagged_stale" in {code for code, _ in renewal_review_reasons(unused, ttl_seconds=3600)}
    flag = AuditEvent.objects.get(action="client.compliance_flag")
    assert (flag.object_id, flag.after["rule"]) == (unused.registration_id, "inactivity")
    # Time travel: a second pass the next day changes nothing and writes nothing.
    run_lifecycle_policies(now=now + timedelta(days=1))
    assert Client.objects.get(pk=unused.pk).stale_at == now
    assert AuditEvent.objects.filter(action="client.compliance_flag").count() == 1
    # The IdP reports use: the next pass clears the flag and resolves the issue.
    Client.objects.filter(pk=unused.pk).update(last_used_at=now + timedelta(days=2))
    run_lifecycle_policies(now=now + timedelta(days=2, hours=1))
    assert Client.objects.get(pk=unused.pk).stale_at is None
    assert ComplianceIssue.objects.get(client=unused).resolution == "compliant"
    # Unused again later, then the rule is switched off: nothing is stale any more.
    run_lifecycle_policies(now=now + timedelta(days=100))
    assert Client.objects.get(pk=unused.pk).stale_at is not None
    publish(attestation={"enabled": False}, inactivity={"enabled": False})
    run_lifecycle_policies(now=now + timedelta(days=101))
    assert not Client.objects.filter(stale_at__isnull=False).exists()
    assert rules.version == 1


def test_scope_limits_a_rule(owner):
    payments = TeamFactory(name="Payments", slug="payments")
    inside = ClientFactory(owner=owner, team=payments, risk_tier=RiskTier.HIGH)
    outside = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    for c in (inside, outside):
        aged(c, days=40)
    rules = publish(attestation={"scope": {"teams": ["payments"], "tiers": ["high"]}})
    flag_issues(rules, now=timezone.now())
    assert list(ComplianceIssue.objects.values_list("client_id", flat=True)) == [inside.pk]


def test_what_if_equals_what_enforcement_then_does(owner):
    other = UserFactory(username="dave", roles=["owner"])
    team = TeamFactory(name="Data", slug="data")
    overdue = [ClientFactory(owner=owner, risk_tier=RiskTier.HIGH) for _ in range(3)]
    overdue += [ClientFactory(owner=other, team=team, risk_tier=RiskTier.MEDIUM) for _ in range(2)]
    fine = [ClientFactory(owner=owner, risk_tier=RiskTier.LOW) for _ in range(2)]
    for c in overdue:
        aged(c, days=100)
    for c in fine:
        aged(c, days=100)
    proposed = parse_rules(
        {
            "attestation": {"action": "suspend", "grace_days": 5},
            "inactivity": {"enabled": False},
            "sponsors": {"enabled": False},
        }
    )
    now = timezone.now()
    what_if = preview(proposed, now=now)
    attestation = what_if.rules[0]
    assert (attestation.flagged, attestation.acted_on) == (5, 5)
    assert attestation.by_owner == {"olivia": 3, "dave": 2}
    assert attestation.by_team == {"(no team)": 3, "data": 2}
    assert attestation.acts_from == now + timedelta(days=5)
    csv_text = what_if.csv()
    assert "attestation,all,,5,5,suspend" in csv_text and "attestation,owner,olivia,3,3" in csv_text
    # nothing was written by the preview
    assert not ComplianceIssue.objects.exists()
    rules = publish(attestation={"action": "suspend", "grace_days": 5})
    assert flag_issues(rules, now=now).flagged["attestation"] == attestation.flagged
    assert enforce(rules, now=attestation.acts_from).total == attestation.acted_on
    assert Client.objects.filter(hold_kind=HoldKind.POLICY).count() == 5
    monitor = preview(parse_rules({}, monitor_only=True), now=now)
    assert monitor.rules[0].acted_on == 0


def test_periodic_pass(owner):
    client = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    aged(client, days=40)
    summary = run_lifecycle_policies()
    assert summary["version"] == 0 and summary["monitor_only"] and summary["flagged"]["attestation"] == 1
    assert summary["acted"] == {}


# --- pages and API -----------------------------------------------------------------------------------------


def test_attest_page_single_and_bulk(client, owner):
    overdue = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH, name="overdue-agent")
    due_later = ClientFactory(owner=owner, risk_tier=RiskTier.LOW, name="later-agent")
    third = ClientFactory(owner=owner, name="third-agent")
    theirs = ClientFactory(owner=UserFactory(username="x-owner", roles=["owner"]), name="not-mine")
    aged(overdue, days=45)
    client.force_login(owner)
    page = client.get("/inventory/mine/attest/")
    html = page.content.decode()
    assert page.status_code == 200 and "not-mine" not in html
    assert html.index("overdue-agent") < html.index("later-agent")  # most overdue first
    assert 'data-overdue="1"' in html and "csrfmiddlewaretoken" in html
    # one row's own button attests that row only, even with others ticked
    response = client.post(
        "/inventory/mine/attest/", {"one": overdue.registration_id, "ids": [third.registration_id]}, follow=True
    )
    assert "1 client(s) attested" in response.content.decode()
    overdue.refresh_from_db()
    third.refresh_from_db()
    assert overdue.attested_by == owner and third.attested_at is None
    # bulk
    client.post("/inventory/mine/attest/", {"ids": [due_later.registration_id, third.registration_id], "note": "ok"})
    assert Client.objects.filter(attested_by=owner).count() == 3
    # someone else's client: refused, not attested
    response = client.post("/inventory/mine/attest/", {"ids": [theirs.registration_id]}, follow=True)
    theirs.refresh_from_db()
    assert theirs.attested_at is None and "may not attest" in response.content.decode()


def test_attest_api_and_compliance_issues_in_api_and_explain(client, owner, security_user):
    from rest_framework.test import APIClient

    target = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    aged(target, days=40)
    rules = publish(attestation={"action": "suspend"})
    flag_issues(rules, now=timezone.now())
    api = APIClient()
    api.force_authenticate(security_user)
    detail = api.get(f"/api/v1/clients/{target.registration_id}/").json()
    assert [i["rule"] for i in detail["compliance_issues"]] == ["attestation"]
    assert detail["compliance_issues"][0]["what_happens"].startswith("suspend at ")
    client.force_login(security_user)
    page = client.get(f"/inventory/{target.registration_id}/").content.decode()
    assert 'data-rule="attestation"' in page and "unless fixed" in page
    # security reads but may not attest; the owner may
    assert api.post(f"/api/v1/clients/{target.registration_id}/attest/", {}, format="json").status_code == 403
    api.force_authenticate(owner)
    response = api.post(f"/api/v1/clients/{target.registration_id}/attest/", {"note": "still needed"}, format="json")
    assert response.status_code == 200 and response.json()["compliance_issues"] == []
    target.refresh_from_db()
    assert target.attested_by == owner
    assert AuditEvent.objects.get(action="client.attest").reason == "still needed"
    ended = ClientFactory(owner=owner, state=ClientState.RETIRED)
    assert api.post(f"/api/v1/clients/{ended.registration_id}/attest/", {}, format="json").status_code == 409


def test_policy_page_previews_before_publishing(client, admin_user, security_user, owner):
    import json

    for _ in range(2):
        aged(ClientFactory(owner=owner, risk_tier=RiskTier.HIGH), days=40)
    rules = {"attestation": {"days": {"high": 30, "medium": 90, "low": 180}, "grace_days": 3, "action": "suspend"}}
    client.force_login(admin_user)
    assert client.get("/inventory/lifecycle-policy/").status_code == 200
    page = client.post("/inventory/lifecycle-policy/", {"action": "preview", "rules": json.dumps(rules)})
    html = page.content.decode()
    assert page.status_code == 200 and 'id="what-if"' in html and '<td class="num" data-flagged>2</td>' in html
    assert not LifecyclePolicy.objects.exists()  # a preview publishes nothing
    csv_response = client.post("/inventory/lifecycle-policy/", {"action": "csv", "rules": json.dumps(rules)})
    assert csv_response["Content-Type"].startswith("text/csv")
    assert "attestation,owner,olivia,2,2,suspend" in csv_response.content.decode()
    bad = client.post(
        "/inventory/lifecycle-policy/", {"action": "publish", "rules": '{"attestation": {"grace_days": 90}}'}
    )
    assert "attestation.grace_days" in bad.content.decode() and not LifecyclePolicy.objects.exists()
    client.post(
        "/inventory/lifecycle-policy/", {"action": "publish_monitor", "rules": json.dumps(rules), "note": "try"}
    )
    v1 = LifecyclePolicy.objects.get()
    assert v1.monitor_only and v1.created_by == admin_user and v1.rules["attestation"]["grace_days"] == 3
    assert AuditEvent.objects.filter(action="lifecycle_policy.publish", actor_id=str(admin_user.pk)).count() == 1
    client.post("/inventory/lifecycle-policy/", {"action": "publish", "rules": json.dumps(rules)})
    assert active_lifecycle_rules().version == 2 and not active_lifecycle_rules().monitor_only
    restore = client.post("/inventory/lifecycle-policy/", {"action": "restore", "version": "1"})
    assert 'id="what-if"' in restore.content.decode()
    # security may preview, not publish
    client.force_login(security_user)
    assert (
        client.post("/inventory/lifecycle-policy/", {"action": "preview", "rules": json.dumps(rules)}).status_code
        == 200
    )
    assert (
        client.post("/inventory/lifecycle-policy/", {"action": "publish", "rules": json.dumps(rules)}).status_code
        == 403
    )
    client.force_login(owner)
    assert client.get("/inventory/lifecycle-policy/").status_code == 403
    assert LifecyclePolicy.objects.count() == 2


def test_attestation_campaign_report(client, security_user, owner):
    other = UserFactory(username="dave", roles=["owner"])
    data = TeamFactory(name="Data", slug="data")
    fresh = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)  # attested (due in 30 days)
    soon = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)  # due within 14 days
    late = ClientFactory(owner=other, team=data, risk_tier=RiskTier.MEDIUM)  # overdue
    acted = ClientFactory(owner=other, team=data, risk_tier=RiskTier.HIGH)  # suspended by the policy
    aged(soon, days=20)
    aged(late, days=100)
    aged(acted, days=60)
    rules = publish(attestation={"action": "suspend", "grace_days": 0})
    now = timezone.now()
    flag_issues(publish(attestation={"action": "suspend", "grace_days": 0, "scope": {"tiers": ["high"]}}), now=now)
    enforce(active_lifecycle_rules(), now=now)
    lifecycle_policy_publish(actor=ADMIN, rules=rules.to_dict(), monitor_only=False)
    assert fresh.pk and Client.objects.get(pk=acted.pk).hold_kind == HoldKind.POLICY
    client.force_login(security_user)
    html = client.get("/reports/attestation/").content.decode()
    assert "1 attested · 1 due · 1 overdue · 1 acted on" in html
    assert "NHI1:2025" in html and "GOVERN 1.7" in html
    csv_text = client.get("/reports/attestation/?format=csv").content.decode()
    assert "owner,dave,0,0,1,1,2,0" in csv_text and "owner,olivia,1,1,0,0,2,50" in csv_text
    assert "team,data,0,0,1,1,2,0" in csv_text
    client.force_login(owner)
    assert client.get("/reports/attestation/").status_code == 403


# --- sponsors ----------------------------------------------------------------------------------------------


def test_co_sponsor_invite_accept_leave_and_the_sponsors_rule(client, owner):
    from inventory.models import ClientSponsor, SponsorState

    rules = publish(attestation={"enabled": False}, sponsors={"enabled": True, "action": "suspend", "grace_days": 2})
    high = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH, name="high-agent")
    low = ClientFactory(owner=owner, risk_tier=RiskTier.LOW)
    dave = UserFactory(username="dave", roles=["owner"])
    now = timezone.now()
    assert flag_issues(rules, now=now).flagged["sponsors"] == 1  # high tier needs 2; low tier's owner is enough
    assert ComplianceIssue.objects.get().client_id == high.pk and low.pk

    client.force_login(owner)
    client.post(f"/inventory/mine/{high.registration_id}/sponsors/", {"username": "dave"})
    invited = ClientSponsor.objects.get(client=high, user=dave)
    assert invited.state == SponsorState.PENDING and invited.invited_by == owner
    # an invitation does not count; the invited person alone may answer it
    assert flag_issues(rules, now=now).resolved["sponsors"] == 0
    assert client.post(f"/inventory/sponsorships/{invited.pk}/accept/").status_code == 403
    duplicate = client.post(f"/inventory/mine/{high.registration_id}/sponsors/", {"username": "dave"}, follow=True)
    assert "already invited" in duplicate.content.decode()
    client.force_login(dave)
    inbox = client.get("/inventory/sponsorships/").content.decode()
    assert "high-agent" in inbox and "Accept" in inbox
    client.post(f"/inventory/sponsorships/{invited.pk}/accept/")
    invited.refresh_from_db()
    assert invited.state == SponsorState.ACTIVE
    assert flag_issues(rules, now=now).resolved["sponsors"] == 1  # two active sponsors now
    # dave leaves: short again, flagged again, and past the grace the policy suspends it — once
    client.post(f"/inventory/sponsorships/{invited.pk}/remove/")
    invited.refresh_from_db()
    assert invited.state == SponsorState.REMOVED
    assert flag_issues(rules, now=now).flagged["sponsors"] == 1
    later = now + timedelta(days=3)
    assert enforce(rules, now=later).total == 1 and enforce(rules, now=later).total == 0
    high.refresh_from_db()
    assert high.hold_kind == HoldKind.POLICY and "sponsors" in high.hold_reason
    actions = list(
        AuditEvent.objects.filter(object_id=high.registration_id, action__startswith="client.sponsor").values_list(
            "action", flat=True
        )
    )
    assert actions == ["client.sponsor_invite", "client.sponsor_accept", "client.sponsor_remove"]


def test_inactive_sponsor_does_not_count_and_strangers_cannot_invite(owner):
    from inventory.lifecycle_policies.sponsors import sponsor_decide, sponsor_invite

    rules = publish(attestation={"enabled": False}, sponsors={"enabled": True})
    high = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    erin = UserFactory(username="erin", roles=["owner"])
    stranger = UserFactory(username="mallory", roles=["owner"])
    with pytest.raises(PermissionRefused):
        sponsor_invite(client=high, user=stranger, username="erin")
    with pytest.raises(LifecycleError, match="owns this client"):
        sponsor_invite(client=high, user=owner, username=owner.username)
    sponsorship = sponsor_invite(client=high, user=owner, username="erin")
    sponsor_decide(sponsorship=sponsorship, user=erin, accept=True)
    assert flag_issues(rules, now=timezone.now()).flagged["sponsors"] == 0
    erin.is_active = False
    erin.save()
    assert flag_issues(rules, now=timezone.now()).flagged["sponsors"] == 1
    what_if = preview(rules)
    assert [r.flagged for r in what_if.rules if r.rule == "sponsors"] == [1]
