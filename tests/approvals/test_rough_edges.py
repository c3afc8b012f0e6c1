"""Issue 19's rough edges as a requester, approver and security user sees them: readable reasons, "denied"
spelled right and the reason for a refusal or denial shown to the requester."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.choices import RequestState
from approvals.models import Decision
from approvals.services import request_approve, request_deny
from inventory.choices import RiskTier
from portal.templatetags.registrar_display import decision_past, reason_messages
from tests.approvals.intake_support import _fresh_limits_and_policy  # noqa: F401  (autouse: caches reset)
from tests.factories import ClientFactory, RequestFactory

RAW_DICT = "{&#x27;code&#x27;"


def _assert_no_raw_reasons(html: str) -> None:
    assert RAW_DICT not in html and "{'code'" not in html and "denyd" not in html and "approved d" not in html


def test_reason_normaliser_reads_every_stored_shape():
    assert reason_messages([{"code": "a", "message": "Alpha"}, {"code": "b"}, ["c", "Gamma"], "plain"]) == [
        ("a", "Alpha"),
        ("b", "b"),
        ("c", "Gamma"),
        ("", "plain"),
    ]
    assert decision_past("deny") == "denied" and decision_past("approve") == "approved"


def test_requester_sees_denied_and_why(client, owner, make_request, approver):
    denied = make_request(client_name="was-denied")
    request_deny(reg_request=denied, approver=approver, reason="scopes too broad for a ticket bot")
    client.force_login(owner)
    html = client.get(reverse("approvals:mine")).content.decode()
    _assert_no_raw_reasons(html)
    assert f"{approver.get_username()} denied: “scopes too broad for a ticket bot”" in html
    assert "Denied" in html
    # The reason appears once, with who denied it, not again as a bare line underneath.
    assert html.count("scopes too broad for a ticket bot") == 1


def test_requester_sees_the_policy_reasons_of_a_refusal(client, owner, make_request):
    make_request(
        client_name="was-refused",
        state=RequestState.REFUSED,
        decision_reason="refused by policy",
        reasons=[{"code": "refused_scope", "message": "scope admin:all is not in the catalogue"}],
    )
    client.force_login(owner)
    html = client.get(reverse("approvals:mine")).content.decode()
    _assert_no_raw_reasons(html)
    assert "Refused by policy" in html
    assert "scope admin:all is not in the catalogue" in html and "(refused_scope)" in html


def test_detail_page_spells_decisions_and_renders_reasons(client, make_request, approver, approver2):
    req = make_request(RiskTier.HIGH, client_name="deploy-bot")
    request_approve(reg_request=req, approver=approver2, reason="fine by me")
    request_deny(reg_request=req, approver=approver, reason="not this quarter")
    client.force_login(approver)
    html = client.get(reverse("approvals:detail", args=[req.public_id])).content.decode()
    _assert_no_raw_reasons(html)
    assert f"{approver2.get_username()}</span> approved: “fine by me”" in html
    assert f"{approver.get_username()}</span> denied: “not this quarter”" in html
    assert "repo:write is high sensitivity" in html and "(high_sensitivity_scope)" in html


def test_explain_page_renders_reasons_as_text(client, owner, security_user, approver):
    managed = ClientFactory(owner=owner, risk_tier=RiskTier.HIGH)
    origin = RequestFactory(
        public_id=managed.registration_id,
        owner=owner,
        state="denied",
        outcome="review",
        reasons=[{"code": "high_sensitivity_scope", "message": "repo:write is high sensitivity"}],
    )
    Decision.objects.create(request=origin, approver=approver, kind="deny", reason="no")
    client.force_login(security_user)
    html = client.get(reverse("inventory:explain", args=[managed.registration_id])).content.decode()
    _assert_no_raw_reasons(html)
    assert "repo:write is high sensitivity" in html and "(high_sensitivity_scope)" in html
    assert f"<strong>{approver.username}</strong> denied" in html


@pytest.mark.parametrize(
    "template", ["approvals/mine.html", "approvals/detail.html", "inventory/security/explain.html"]
)
def test_no_template_builds_a_past_tense_by_appending_d(template):
    from pathlib import Path

    from django.template.loader import get_template

    source = Path(get_template(template).origin.name).read_text(encoding="utf-8")
    assert "|lower }}d" not in source


# --- renewals ------------------------------------------------------------------------------------------------


@pytest.fixture
def renewal(idp, owner, catalogue):
    from datetime import timedelta

    from django.utils import timezone

    from approvals.choices import RequestKind
    from approvals.models import RegistrationRequest
    from inventory.lifecycle import client_renew

    renewed = ClientFactory(
        idp=idp,
        owner=owner,
        name="release-bot",
        software_id="com.example.release",
        risk_tier=RiskTier.HIGH,
        scopes=["repo:write"],
        metadata={"redirect_uris": ["https://release.example/cb"]},
        expires_at=timezone.now() + timedelta(hours=1),
    )
    client_renew(client=renewed, user=owner, ttl_seconds=20 * 3600)
    return RegistrationRequest.objects.get(kind=RequestKind.RENEWAL, client=renewed)


def test_queue_marks_a_renewal_as_a_renewal(client, approver, renewal, make_request):
    make_request(client_name="fresh-agent")
    client.force_login(approver)
    html = client.get(reverse("approvals:queue")).content.decode()
    row = html[html.index(f'id="row-{renewal.public_id}"') :]
    row = row[: row.index("</tr>")]
    assert 'class="badge-renewal"' in row and "release-bot" in row
    other = html[html.index("fresh-agent") :]
    assert "badge-renewal" not in other[: other.index("</tr>")]


def test_renewal_detail_names_the_client_it_renews_and_is_not_its_own_duplicate(client, approver, renewal):
    client.force_login(approver)
    response = client.get(reverse("approvals:detail", args=[renewal.public_id]))
    detail = response.context["detail"]
    assert detail.duplicate_clients == [] and detail.owner_live_clients == []
    html = response.content.decode()
    assert 'class="badge-renewal"' in html and 'id="renews"' in html
    assert renewal.client.registration_id in html
    assert "No client or pending request shares this software id" in html
    # The renewal was filed as an event on its client; the request's trail shows it instead of "No events yet".
    assert "client.renewal_requested" in html and "No events yet" not in html


def test_a_real_duplicate_of_a_renewed_client_is_still_flagged(client, approver, renewal, owner, idp):
    twin = ClientFactory(idp=idp, owner=owner, name="release-bot-2", software_id="com.example.release")
    client.force_login(approver)
    detail = client.get(reverse("approvals:detail", args=[renewal.public_id])).context["detail"]
    assert [(c.pk, why) for c, why in detail.duplicate_clients] == [(twin.pk, ["same software_id"])]
    assert [c.pk for c in detail.owner_live_clients] == [twin.pk]


# --- the policy editor ------------------------------------------------------------------------------------------


@pytest.fixture
def published_v2(admin_user):
    from approvals.policy_store import policy_publish
    from portal.audit import Actor

    return policy_publish(
        actor=Actor.user(admin_user), thresholds={"approvals_high": 3, "low_ttl_seconds": 7200}, note="stricter"
    )


def test_policy_editor_starts_from_the_active_version(client, admin_user, published_v2):
    import json

    client.force_login(admin_user)
    response = client.get("/admin/approvals/policy/add/")
    assert response.status_code == 200
    shown = json.loads(response.context["adminform"].form["thresholds"].value())
    assert shown["approvals_high"] == 3 and shown["low_ttl_seconds"] == 7200
    from approvals.policy import DEFAULT_THRESHOLDS

    assert set(shown) == set(DEFAULT_THRESHOLDS)  # every threshold is on the page, not "{}"
    assert "&quot;approvals_high&quot;: 3" in response.content.decode()


def test_policy_editor_keeps_thresholds_left_out_and_says_what_changed(client, admin_user, published_v2):
    from approvals.models import Policy
    from approvals.policy_store import active_policy, clear_cache

    client.force_login(admin_user)
    response = client.post(
        "/admin/approvals/policy/add/",
        {"thresholds": '{"max_spawn_depth": 1}', "note": "no grandchildren"},
        follow=True,
    )
    assert response.status_code == 200
    clear_cache()
    config = active_policy(use_cache=False)
    # max_spawn_depth changed; what was left out kept v2's values instead of falling back to the defaults.
    assert (config.version, config.max_spawn_depth, config.approvals_high, config.low_ttl_seconds) == (3, 1, 3, 7200)
    html = response.content.decode()
    assert "Published policy v3. Changed from v2: max_spawn_depth: 3 → 1." in html
    v3 = Policy.objects.get(version=3)
    page = client.get(f"/admin/approvals/policy/{v3.pk}/change/").content.decode()
    assert "Changes from the previous version" in page and "<code>max_spawn_depth</code>: 3 → 1" in page
    page = client.get(f"/admin/approvals/policy/{published_v2.pk}/change/").content.decode()
    assert "<code>approvals_high</code>: 2 → 3" in page and "<code>low_ttl_seconds</code>: 86400 → 7200" in page


def test_policy_editor_refuses_an_unknown_threshold_and_changes_nothing(client, admin_user, published_v2):
    from approvals.models import Policy

    client.force_login(admin_user)
    response = client.post("/admin/approvals/policy/add/", {"thresholds": '{"aprovals_high": 1}', "note": "typo"})
    assert response.status_code == 200
    assert "Unknown threshold(s): aprovals_high" in response.content.decode()
    assert Policy.objects.count() == 2 and Policy.objects.get(is_active=True).version == 2
    response = client.post("/admin/approvals/policy/add/", {"thresholds": "[1, 2]", "note": "not an object"})
    assert "Thresholds must be a JSON object" in response.content.decode()
    assert Policy.objects.count() == 2
