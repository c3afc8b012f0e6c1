"""Framework-mapping report: the catalogue is exact, every control is measured correctly on known data."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from django.utils.html import escape

from approvals.models import Decision
from inventory.choices import ClientState, RiskTier
from inventory.reports import audit_log
from inventory.reports import controls as ctl
from inventory.reports.controls import (
    CONTROLS,
    catalogue_item_ids,
    framework_catalogue,
    framework_report,
    measure_controls,
)
from portal.audit import Actor, audit_record
from portal.models import LogCheckpoint
from portal.tlog.sequencer import log_seal
from tests.dbtamper import disable_event_trigger
from tests.factories import ClientFactory, RequestFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_reports(settings):
    """Each test measures its own data: no cached dashboard/report snapshot from another test."""
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0


# The published IDs and names (OWASP NHI 2025, OWASP Agentic 2026, OWASP Agentic threats v1, CSA MAESTRO,
# NIST AI RMF 1.0, MITRE ATLAS v5.6.0), as in ../shared/frameworks.yaml with NIST names unsplit.
EXPECTED = {
    "owasp_nhi_2025": [
        ("NHI1:2025", "Improper Offboarding"),
        ("NHI2:2025", "Secret Leakage"),
        ("NHI3:2025", "Vulnerable Third-Party NHI"),
        ("NHI4:2025", "Insecure Authentication"),
        ("NHI5:2025", "Overprivileged NHI"),
        ("NHI6:2025", "Insecure Cloud Deployment Configurations"),
        ("NHI7:2025", "Long-Lived Secrets"),
        ("NHI8:2025", "Environment Isolation"),
        ("NHI9:2025", "NHI Reuse"),
        ("NHI10:2025", "Human Use of NHI"),
    ],
    "owasp_agentic_2026": [
        ("ASI01", "Agent Goal Hijack"),
        ("ASI02", "Tool Misuse and Exploitation"),
        ("ASI03", "Identity and Privilege Abuse"),
        ("ASI04", "Agentic Supply Chain Vulnerabilities"),
        ("ASI05", "Unexpected Code Execution (RCE)"),
        ("ASI06", "Memory & Context Poisoning"),
        ("ASI07", "Insecure Inter-Agent Communication"),
        ("ASI08", "Cascading Failures"),
        ("ASI09", "Human-Agent Trust Exploitation"),
        ("ASI10", "Rogue Agents"),
    ],
    "owasp_agentic_threats_v1": [
        ("T3", "Privilege Compromise"),
        ("T8", "Repudiation & Untraceability"),
        ("T9", "Identity Spoofing & Impersonation"),
        ("T10", "Overwhelming Human in the Loop"),
        ("T13", "Rogue Agents in Multi-Agent Systems"),
    ],
    "csa_maestro": [
        ("L1", "Foundation Models"),
        ("L2", "Data Operations"),
        ("L3", "Agent Frameworks"),
        ("L4", "Deployment and Infrastructure"),
        ("L5", "Evaluation and Observability"),
        ("L6", "Security and Compliance"),
        ("L7", "Agent Ecosystem"),
    ],
    "nist_ai_rmf_1_0": [
        (
            "GOVERN 1.4",
            "Risk management process and outcomes established through transparent policies, procedures and controls",
        ),
        ("GOVERN 1.6", "Mechanisms are in place to inventory AI systems"),
        ("GOVERN 1.7", "Processes for decommissioning and phasing out AI systems safely"),
        ("GOVERN 2.1", "Roles, responsibilities and lines of communication are documented"),
        ("GOVERN 3.2", "Policies define roles for human-AI configurations and oversight"),
        ("GOVERN 4.3", "Practices enable testing, incident identification and information sharing"),
        ("GOVERN 6.1", "Policies address risks from third-party entities"),
        ("MAP 1.1", "Intended purposes and context are understood and documented"),
        ("MAP 3.3", "Targeted application scope is specified and documented"),
        ("MAP 3.5", "Processes for human oversight are defined and documented"),
        ("MEASURE 2.4", "Functionality and behavior are monitored in production"),
        ("MEASURE 2.7", "Security and resilience are evaluated and documented"),
        ("MEASURE 2.8", "Risks associated with transparency and accountability are examined"),
        ("MANAGE 2.4", "Mechanisms are in place to supersede, disengage, or deactivate AI systems"),
        (
            "MANAGE 4.1",
            "Post-deployment monitoring plans including override, decommissioning, incident response and change management",
        ),
    ],
    "mitre_atlas": [
        ("AML.T0012", "Valid Accounts"),
        ("AML.T0021", "Establish Accounts"),
        ("AML.T0055", "Unsecured Credentials"),
        ("AML.T0083", "Credentials from AI Agent Configuration"),
        ("AML.T0098", "AI Agent Tool Credential Harvesting"),
        ("AML.T0091.000", "Use Alternate Authentication Material: Application Access Token"),
        ("AML.T0053", "AI Agent Tool Invocation"),
        ("AML.T0081", "Modify AI Agent Configuration"),
        ("AML.T0103", "Deploy AI Agent"),
        ("AML.T0073", "Impersonation"),
        ("AML.M0024", "AI Telemetry Logging"),
        ("AML.M0026", "Privileged AI Agent Permissions Configuration"),
        ("AML.M0027", "Single-User AI Agent Permissions Configuration"),
        ("AML.M0028", "AI Agent Tools Permissions Configuration"),
        ("AML.M0029", "Human In-the-Loop for AI Agent Actions"),
    ],
}


@pytest.fixture(autouse=True)
def _fresh_audit_checkpoint():
    cache.delete(audit_log.AUDIT_CACHE_KEY)
    yield
    cache.delete(audit_log.AUDIT_CACHE_KEY)


def by_key(results):
    return {r.control.key: r for r in results}


def test_catalogue_ids_and_names_are_exact():
    catalogue = framework_catalogue()
    assert {k: [(i["id"], i["name"]) for i in fw["items"]] for k, fw in catalogue.items()} == EXPECTED
    nhi = dict(EXPECTED["owasp_nhi_2025"])
    assert nhi["NHI1:2025"] == "Improper Offboarding" and nhi["NHI10:2025"] == "Human Use of NHI"
    assert dict(EXPECTED["owasp_agentic_2026"])["ASI03"] == "Identity and Privilege Abuse"
    atlas = dict(EXPECTED["mitre_atlas"])
    for item in (
        "AML.T0012",
        "AML.T0055",
        "AML.T0083",
        "AML.T0098",
        "AML.T0091.000",
        "AML.M0026",
        "AML.M0027",
        "AML.M0029",
    ):
        assert item in atlas


def test_every_control_maps_to_catalogued_items():
    known = catalogue_item_ids()
    for control in CONTROLS:
        assert control.items, control.key
        assert set(control.items) <= known, (control.key, set(control.items) - known)


@pytest.fixture
def four_live(idp, owner, catalogue):
    leaver = UserFactory(username="leaver", is_active=False)
    clients = [ClientFactory(idp=idp, owner=owner) for _ in range(3)]
    clients.append(ClientFactory(idp=idp, owner=leaver, name="left-behind"))
    ClientFactory(idp=idp, owner=leaver, state=ClientState.RETIRED)  # ended: not measured
    return clients


def test_one_of_four_with_inactive_owner_is_75_percent(four_live):
    result = by_key(measure_controls())["owner_bound"]
    assert (result.total, result.failing, result.percent) == (4, 1, 75.0)
    assert result.status == "fail"
    assert result.sentence == "75 % of live clients have an active owner — 1 does not."
    assert result.drill_down == "failing=owner_bound"


def test_drill_down_lists_exactly_the_failing_clients(client, security_user, four_live):
    client.force_login(security_user)
    response = client.get("/inventory/?failing=owner_bound")
    assert [c.name for c in response.context["page"].items] == ["left-behind"]


def test_partial_between_90_and_100_percent(idp, owner, catalogue):
    leaver = UserFactory(username="leaver2", is_active=False)
    for _ in range(19):
        ClientFactory(idp=idp, owner=owner)
    ClientFactory(idp=idp, owner=leaver)
    result = by_key(measure_controls())["owner_bound"]
    assert (result.status, result.percent) == ("partial", 95.0)
    assert result.sentence == "95 % of live clients have an active owner — 1 does not."


def good(idp, owner, **overrides):
    values = {
        "idp": idp,
        "owner": owner,
        "purpose": "does a job",
        "scopes": ["tickets:read"],
        "auth_method": "private_key_jwt",
        "risk_tier": RiskTier.LOW,
        "expires_at": timezone.now() + timedelta(hours=1),
    }
    return ClientFactory(**(values | overrides))


@pytest.mark.parametrize(
    "key,bad",
    [
        ("purpose_recorded", {"purpose": ""}),
        ("ttl_within_ceiling", {"expires_at": None}),
        ("ttl_within_ceiling", {"risk_tier": RiskTier.HIGH, "expires_at": timezone.now() + timedelta(hours=30)}),
        ("key_based_auth", {"auth_method": "none"}),
        ("no_shared_secret", {"auth_method": "client_secret_basic"}),
        ("scope_within_catalogue", {"scopes": ["tickets:read", "mystery:admin"]}),
        ("idp_in_sync", {"sync_failed": True}),
        ("idp_in_sync", {"drift": {"scopes": ["x"]}}),
        ("idp_in_sync", {"managed": False}),
    ],
)
def test_each_control_catches_its_failure(idp, owner, catalogue, key, bad):
    good(idp, owner)
    good(idp, owner, **bad)
    good(idp, owner, state=ClientState.REVOKED, **bad)  # ended clients are not measured
    result = by_key(measure_controls())[key]
    assert (result.total, result.failing, result.status) == (2, 1, "fail")


def test_a_well_governed_client_passes_every_control(idp, owner, catalogue):
    good(idp, owner)
    assert {r.control.key: r.status for r in measure_controls()} == {c.key: "pass" for c in CONTROLS}


def test_medium_tier_may_live_a_week(idp, owner, catalogue):
    good(idp, owner, risk_tier=RiskTier.MEDIUM, expires_at=timezone.now() + timedelta(days=6))
    good(idp, owner, risk_tier=RiskTier.MEDIUM, expires_at=timezone.now() + timedelta(days=8))
    result = by_key(measure_controls())["ttl_within_ceiling"]
    assert (result.total, result.failing) == (2, 1)


def test_human_approval_for_high_tier(idp, owner, approver, approver2, catalogue):
    approved = good(idp, owner, risk_tier=RiskTier.HIGH, name="two-approvals")
    single = good(idp, owner, risk_tier=RiskTier.HIGH, name="one-approval")
    good(idp, owner, risk_tier=RiskTier.HIGH, name="none")
    good(idp, owner, risk_tier=RiskTier.LOW)  # low tier: not in the population
    r1 = RequestFactory(public_id=approved.registration_id, state="approved", client=approved)
    Decision.objects.create(request=r1, approver=approver, kind="approve")
    Decision.objects.create(request=r1, approver=approver2, kind="approve")
    r2 = RequestFactory(public_id=single.registration_id, state="approved", client=single)
    Decision.objects.create(request=r2, approver=approver, kind="approve")
    Decision.objects.create(request=r2, approver=approver2, kind="deny")
    result = by_key(measure_controls())["human_approval_high_tier"]
    assert (result.total, result.failing) == (3, 2)
    assert result.sentence == "33.3 % of live high-tier clients were approved by two distinct people — 2 do not."


def test_child_within_parent(idp, owner, catalogue):
    parent = good(idp, owner, scopes=["tickets:read", "docs:read"])
    good(idp, owner, parent=parent, depth=1, scopes=["docs:read"], expires_at=parent.expires_at - timedelta(minutes=5))
    good(
        idp,
        owner,
        parent=parent,
        depth=1,
        scopes=["docs:read", "repo:write"],
        name="wider",
        expires_at=parent.expires_at - timedelta(minutes=5),
    )
    good(
        idp,
        owner,
        parent=parent,
        depth=1,
        scopes=["docs:read"],
        name="outlives",
        expires_at=parent.expires_at + timedelta(minutes=5),
    )
    result = by_key(measure_controls())["child_within_parent"]
    assert (result.total, result.failing) == (3, 2)
    assert {c.name for c in ctl.failing_clients("child_within_parent")} == {"wider", "outlives"}


def test_orphans_within_grace(idp, owner, catalogue, settings):
    settings.REGISTRAR_ORPHAN_GRACE_HOURS = 72
    now = timezone.now()
    good(idp, owner, orphaned_at=now - timedelta(hours=1))  # within grace
    good(idp, owner, orphaned_at=now - timedelta(hours=100), name="overdue")  # still active after grace
    good(idp, owner, orphaned_at=now - timedelta(hours=100), state=ClientState.SUSPENDED)  # handled
    result = by_key(measure_controls())["orphan_within_grace"]
    assert (result.total, result.failing) == (3, 1)
    assert [c.name for c in ctl.failing_clients("orphan_within_grace")] == ["overdue"]


def test_audit_chain_control_incremental_and_detects_breaks(db):
    for i in range(3):
        audit_record(actor=Actor.system("t"), action="test.event", object_type="thing", object_id=i)
    log_seal()
    result = by_key(measure_controls())["audit_chain_intact"]
    assert (result.status, result.total, result.failing) == ("pass", 3, 0)
    assert "verify against signed checkpoint 3" in result.sentence
    audit_record(actor=Actor.system("t"), action="test.event", object_type="thing", object_id=4)
    log_seal()
    state = audit_log.audit_chain_status()
    assert state["checked"] == 4 and state["complete"]
    # A cached state that disagrees with the signed checkpoint is reported as a break, not papered over.
    forged = audit_log._verify_from(
        {"checked": 0, "hashes": [], "broken": None}, LogCheckpoint.objects.get(tree_size=3), 3, budget=10
    )
    assert forged["checked"] == 3 and forged["broken"] is None
    forged["hashes"][0] = "ff" * 32
    cache.set(audit_log.AUDIT_CACHE_KEY, forged)
    result = by_key(measure_controls())["audit_chain_intact"]
    assert result.status == "fail" and "no longer match signed checkpoint 4" in result.sentence


def test_audit_control_fails_when_the_database_would_accept_changes(db):
    audit_record(actor=Actor.system("t"), action="test.event", object_type="thing", object_id=1)
    log_seal()
    trigger = disable_event_trigger()
    result = by_key(measure_controls())["audit_chain_intact"]
    assert result.status == "fail" and f"{trigger} on portal_auditevent" in result.sentence


def test_audit_chain_verification_in_budgeted_steps(db):
    for i in range(5):
        audit_record(actor=Actor.system("t"), action="test.event", object_type="thing", object_id=i)
    log_seal()
    first = audit_log.audit_chain_status(budget=2)
    assert (first["checked"], first["complete"]) == (2, False)
    assert by_key(measure_controls())["audit_chain_intact"].status in ("partial", "pass")
    assert audit_log.audit_chain_refresh()["complete"]


def test_item_status_is_the_worst_mapped_control(four_live):
    report = framework_report()
    items = {i.id: i for fw in report["frameworks"] for i in fw["items"]}
    assert items["NHI1:2025"].status == "fail"  # owner bound fails
    assert items["AML.M0029"].status == "pass"  # no live high-tier clients, nothing fails
    assert items["ASI01"].status == "not_assessed"  # goal hijack is outside Registrar's controls
    assert items["NHI1:2025"].evidence_failing >= 1


def test_report_page_csv_and_print(client, security_user, four_live):
    client.force_login(security_user)
    html = client.get("/reports/frameworks/").content.decode()
    assert "75 % of live clients have an active owner — 1 does not." in html
    assert 'href="/inventory/?failing=owner_bound"' in html
    for items in EXPECTED.values():
        for item_id, name in items:
            assert escape(item_id) in html and escape(name) in html, item_id
    printed = client.get("/reports/frameworks/?print=1")
    assert printed.status_code == 200 and b"End of report." in printed.content
    rows = list(csv.reader(io.StringIO(client.get("/reports/frameworks.csv").content.decode())))
    item_rows = [r for r in rows[1:] if len(r) == 7]
    assert len(item_rows) == sum(len(v) for v in EXPECTED.values())
    nhi1 = next(r for r in item_rows if r[1] == "NHI1:2025")
    assert nhi1[2] == "Improper Offboarding" and nhi1[3] == "fail"
    assert ["Owner bound", "fail", "4", "1", "75.0", "75 % of live clients have an active owner — 1 does not."] in rows


def test_attestation_has_its_own_control_measured_like_the_campaign(client, security_user, idp, owner, catalogue):
    """The framework report's "Owners re-attest" control: the attestation rule's scope and periods, the same
    count of overdue clients as /reports/attestation/, mapped to the review/offboarding items by exact id."""
    from inventory.lifecycle_policies import lifecycle_policy_publish
    from inventory.reports.attestation import attestation_campaign

    assert ctl.CONTROLS_BY_KEY["attestation_current"].items == (
        "GOVERN 1.4",
        "GOVERN 1.6",
        "GOVERN 1.7",
        "MANAGE 2.4",
        "MANAGE 4.1",
        "NHI1:2025",
        "NHI5:2025",
    )
    long_ago = timezone.now() - timedelta(days=100)
    good(idp, owner, name="fresh")
    overdue = good(idp, owner, name="overdue", risk_tier=RiskTier.MEDIUM, activated_at=long_ago)  # medium: 90 d
    good(idp, owner, name="re-attested", risk_tier=RiskTier.MEDIUM, activated_at=long_ago, attested_at=timezone.now())
    good(idp, owner, name="low-tier", activated_at=long_ago)  # low: 180 d
    good(idp, owner, name="ended", activated_at=long_ago, state=ClientState.RETIRED, risk_tier=RiskTier.MEDIUM)
    good(idp, owner, name="suspended", activated_at=long_ago, state=ClientState.SUSPENDED, risk_tier=RiskTier.MEDIUM)
    result = by_key(measure_controls())["attestation_current"]
    assert (result.total, result.failing, result.status) == (4, 1, "fail")
    assert result.sentence == (
        "75 % of active clients the attestation rule covers were re-attested by their owner within their tier's "
        "period — 1 does not."
    )
    assert attestation_campaign().totals.overdue == result.failing
    client.force_login(security_user)
    assert [c.name for c in client.get("/inventory/?failing=attestation_current").context["page"].items] == [
        overdue.name
    ]
    # The rule's scope is the control's population: scoped to high tier, nothing here is measured.
    rules = {
        "attestation": {"enabled": True, "days": {"high": 30, "medium": 90, "low": 180}, "scope": {"tiers": ["high"]}}
    }
    lifecycle_policy_publish(actor=Actor.system("test"), rules=rules, monitor_only=True)
    result = by_key(measure_controls())["attestation_current"]
    assert (result.total, result.failing, result.status) == (0, 0, "pass")
    names = [i for fw in framework_report()["frameworks"] for i in fw["items"] if i.id == "NHI1:2025"]
    assert "attestation_current" in {r.control.key for r in names[0].controls}
    campaign = attestation_campaign()
    assert [name for name, _ in campaign.evidences][-2:] == ["NHI1:2025", "NHI5:2025"]
    assert dict(campaign.evidences)["MANAGE 4.1"] == (
        "Post-deployment monitoring plans including override, decommissioning, incident response and change management"
    )
