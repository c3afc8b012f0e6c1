"""Queue, detail, decide and owner pages: rendering, htmx and no-JS flows, bad input, query counts."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import Decision, RegistrationRequest
from approvals.services import request_approve
from inventory.choices import ClientState, RiskTier
from inventory.models import Client
from tests.factories import ClientFactory, RequestFactory, TokenFactory, UserFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


def _state(req):
    fresh = RegistrationRequest.objects.get(pk=req.pk)
    return fresh.state, Decision.objects.filter(request=req).count(), fresh.client_id


@pytest.fixture
def bob(client, approver):
    client.force_login(approver)
    return client


def bulk_pending(n, *, owner, team, idp, token):
    now = timezone.now()
    rows = [
        RegistrationRequest(
            public_id=f"reg_bulk{i:06d}",
            via="token",
            client_name=f"bulk-agent-{i}",
            purpose="bulk",
            owner=owner,
            team=team,
            idp=idp,
            token=token,
            requested_scopes=["tickets:read", "repo:write"],
            risk_tier=[RiskTier.HIGH, RiskTier.MEDIUM][i % 2],
            approvals_needed=2 - i % 2,
            policy_version=1,
            reasons=[{"code": "medium_sensitivity_scope", "message": "medium scope"}],
            outcome="review",
            metadata={"redirect_uris": [f"https://a{i}.example/cb"]},
        )
        for i in range(n)
    ]
    created = RegistrationRequest.objects.bulk_create(rows, batch_size=1000)
    RegistrationRequest.objects.filter(public_id__startswith="reg_bulk").update(created_at=now - timedelta(hours=5))
    return created


# --- queue -------------------------------------------------------------------------------------


def test_queue_lists_high_tier_first_with_row_facts(bob, make_request, approver2):
    medium = make_request(RiskTier.MEDIUM, client_name="older-medium")
    RegistrationRequest.objects.filter(pk=medium.pk).update(created_at=timezone.now() - timedelta(hours=30))
    high = make_request(RiskTier.HIGH, client_name="new-high")
    request_approve(reg_request=high, approver=approver2, reason="ok by carol")
    response = bob.get(reverse("approvals:queue"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("new-high") < html.index("older-medium")
    assert "1 of 2" in html and "carol" in html
    assert "badge-high" in html and "repo:write" in html
    assert "sla-late" in html  # 30 h old, late after 24 h
    assert "repo:write is high sensitivity" in html
    assert "data-keyboard-list" in html and 'data-action="approve"' in html and 'data-action="deny"' in html
    assert response.context["nav_counts"]["pending_approvals"].__int__() == 2


def test_queue_hides_own_and_already_decided(client, make_request, approver, owner):
    mine = make_request(owner=approver, client_name="bobs-own")
    decided = make_request(RiskTier.HIGH, client_name="bob-approved-already")
    request_approve(reg_request=decided, approver=approver, reason="fine")
    client.force_login(approver)
    html = client.get(reverse("approvals:queue")).content.decode()
    assert "bobs-own" not in html and "bob-approved-already" not in html
    assert mine.state == RequestState.PENDING
    assert "queue is empty" in html


def test_queue_filters_and_htmx_partial(bob, make_request):
    make_request(RiskTier.HIGH, client_name="deploy-bot")
    make_request(RiskTier.MEDIUM, client_name="ticket-bot")
    html = bob.get(reverse("approvals:queue"), {"tier": "high"}).content.decode()
    assert "deploy-bot" in html and "ticket-bot" not in html
    html = bob.get(reverse("approvals:queue"), {"scope": "repo:write"}).content.decode()
    assert "deploy-bot" in html and "ticket-bot" not in html
    html = bob.get(reverse("approvals:queue"), {"q": "ticket"}).content.decode()
    assert "ticket-bot" in html and "deploy-bot" not in html
    html = bob.get(reverse("approvals:queue"), {"age": "late"}).content.decode()
    assert "No pending requests match these filters." in html
    partial = bob.get(reverse("approvals:queue"), {"owner": "olivia"}, **HTMX)
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="queue-results">') and "<html" not in body
    assert "deploy-bot" in body and "ticket-bot" in body


def test_queue_paginates(bob, owner, team, idp, catalogue):
    bulk_pending(30, owner=owner, team=team, idp=idp, token=TokenFactory(owner=owner))
    page1 = bob.get(reverse("approvals:queue"))
    assert page1.context["page_obj"].paginator.count == 30
    assert len(page1.context["rows"]) == 25
    assert len(bob.get(reverse("approvals:queue"), {"page": 2}).context["rows"]) == 5


def test_queue_needs_approver_role(client, owner, security_user, medium_request):
    assert client.get(reverse("approvals:queue")).status_code == 302  # to login
    client.force_login(owner)
    assert client.get(reverse("approvals:queue")).status_code == 403
    assert client.get(reverse("approvals:detail", args=[medium_request.public_id])).status_code == 403
    client.force_login(security_user)
    assert client.get(reverse("approvals:queue")).status_code == 403


def _count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_queue_query_count_is_constant(bob, owner, team, idp, catalogue, approver2):
    token = TokenFactory(owner=owner)
    reqs = bulk_pending(10, owner=owner, team=team, idp=idp, token=token)
    request_approve(reg_request=RegistrationRequest.objects.get(pk=reqs[0].pk), approver=approver2, reason="x")
    url = reverse("approvals:queue")
    small = _count_queries(bob, url)
    small_htmx = len(_capture(lambda: bob.get(url, **HTMX)))
    bulk_pending_more = [
        RegistrationRequest(
            public_id=f"reg_more{i:06d}",
            via="token",
            client_name=f"m{i}",
            owner=owner,
            team=team,
            idp=idp,
            token=token,
            requested_scopes=["docs:read"],
            risk_tier=RiskTier.HIGH,
            approvals_needed=2,
        )
        for i in range(490)
    ]
    RegistrationRequest.objects.bulk_create(bulk_pending_more, batch_size=1000)
    for r in RegistrationRequest.objects.filter(public_id__startswith="reg_more")[:30]:
        request_approve(reg_request=r, approver=approver2, reason="x")
    assert RegistrationRequest.objects.pending().count() == 500
    assert _count_queries(bob, url) == small
    assert len(_capture(lambda: bob.get(url, **HTMX))) == small_htmx
    assert _count_queries(bob, url + "?tier=high&page=3") == small


def _capture(fn):
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return ctx.captured_queries


def test_detail_query_count_is_constant(bob, owner, team, idp, catalogue, make_request, approver2):
    token = TokenFactory(owner=owner)
    parent = ClientFactory(owner=owner, scopes=["tickets:read"], name="parent-agent")
    target = make_request(RiskTier.HIGH, client_name="bulk-agent-1", parent_client=parent, software_id="sw.dup")
    request_approve(reg_request=target, approver=approver2, reason="carol says yes")
    bulk_pending(10, owner=owner, team=team, idp=idp, token=token)
    url = reverse("approvals:detail", args=[target.public_id])
    # The page reads the active policy (the high tier's working window): read it every time, so neither count
    # depends on how long the bulk insert took against the policy cache's lifetime.
    with mock.patch("approvals.policy_store.CACHE_SECONDS", 0):
        small = _count_queries(bob, url)
        bulk_pending_more = [
            RegistrationRequest(
                public_id=f"reg_more{i:06d}",
                via="token",
                client_name=f"m{i}",
                owner=owner,
                idp=idp,
                token=token,
                requested_scopes=["docs:read"],
                risk_tier=RiskTier.MEDIUM,
                approvals_needed=1,
            )
            for i in range(490)
        ]
        RegistrationRequest.objects.bulk_create(bulk_pending_more, batch_size=1000)
        assert _count_queries(bob, url) == small


def test_detail_shows_what_an_approver_needs(bob, owner, make_request, approver2):
    grandparent = ClientFactory(owner=owner, name="gp-agent", scopes=["tickets:read", "docs:read"])
    parent = ClientFactory(
        owner=owner, name="parent-agent", parent=grandparent, depth=1, scopes=["tickets:read", "docs:read"]
    )
    ClientFactory(owner=owner, name="deploy-bot", software_id="other")  # same name
    ClientFactory(name="uri-twin", metadata={"redirect_uris": ["https://agent.example/cb"]})
    ClientFactory(name="sw-twin", software_id="com.example.deploy")
    ClientFactory(owner=owner, name="retired-agent", state=ClientState.RETIRED)
    req = make_request(
        RiskTier.HIGH, client_name="deploy-bot", software_id="com.example.deploy", parent_client=parent, via="spawn"
    )
    request_approve(reg_request=req, approver=approver2, reason="carol agrees")
    html = bob.get(reverse("approvals:detail", args=[req.public_id])).content.decode()
    assert "gp-agent" in html and "parent-agent" in html  # lineage
    assert "+repo:write" in html and "−docs:read" in html  # scopes diff against parent
    assert "same name" in html and "shares redirect URI https://agent.example/cb" in html
    assert "same software_id" in html
    assert "retired-agent" not in html  # only live clients
    assert "carol" in html and "carol agrees" in html  # decisions
    assert "request.approve" in html  # audit trail
    assert "test token" in html  # requester proof: the token's purpose
    assert "repo:write is high sensitivity" in html
    assert 'id="decide"' in html


# --- deciding without JavaScript ------------------------------------------------------------


def test_plain_post_approve_redirects_with_message(bob, medium_request):
    response = bob.post(
        reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "approve", "reason": ""}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("approvals:queue")
    assert "the client is being provisioned" in response.content.decode()
    fresh = RegistrationRequest.objects.get(pk=medium_request.pk)
    assert fresh.state == RequestState.APPROVED
    assert Client.objects.get(pk=fresh.client_id).state == ClientState.PROVISIONING


def test_detail_form_narrows_scopes_and_ttl(bob, high_request):
    response = bob.post(
        reverse("approvals:decide", args=[high_request.public_id]),
        {
            "decision": "approve",
            "narrow": "on",
            "scopes": ["tickets:read"],
            "ttl_seconds": "900",
            "reason": "read only please",
        },
    )
    assert response.status_code == 302
    fresh = RegistrationRequest.objects.get(pk=high_request.pk)
    assert fresh.state == RequestState.PENDING and fresh.granted_scopes == ["tickets:read"]
    assert fresh.granted_ttl == 900


def test_plain_post_deny(bob, medium_request):
    response = bob.post(
        reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "deny", "reason": "no business need"}
    )
    assert response.status_code == 302
    assert RegistrationRequest.objects.get(pk=medium_request.pk).state == RequestState.DENIED


# --- deciding with htmx ------------------------------------------------------------------------


def test_htmx_inline_form_and_decision_updates_queue(bob, make_request):
    high = make_request(RiskTier.HIGH, client_name="deploy-bot")
    other = make_request(RiskTier.MEDIUM, client_name="ticket-bot")
    form = bob.get(reverse("approvals:decide", args=[high.public_id]), {"decision": "approve"}, **HTMX)
    assert form.status_code == 200 and "required" in form.content.decode() and "<html" not in form.content.decode()
    inline = bob.get(reverse("approvals:decide", args=[high.public_id]), {"decision": "deny", "tier": "high"}, **HTMX)
    assert f'{reverse("approvals:decide", args=[high.public_id])}?tier=high"' in inline.content.decode()
    response = bob.post(
        reverse("approvals:decide", args=[high.public_id]), {"decision": "approve", "reason": "ship it"}, **HTMX
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="queue-results">')
    assert "Approval recorded for deploy-bot; it needs another approver." in body
    assert "deploy-bot" not in body.split("</ul>", 1)[1]  # gone from bob's queue
    assert "ticket-bot" in body
    assert "match these filters" not in body
    assert 'id="nav-pending-count" hx-swap-oob="true"' in body and ">1<" in body  # badge refreshed out of band
    assert _state(high)[:2] == (RequestState.PENDING, 1)
    assert _state(other)[1] == 0


def test_htmx_error_returns_form_with_status(bob, high_request):
    response = bob.post(
        reverse("approvals:decide", args=[high_request.public_id]), {"decision": "approve", "reason": ""}, **HTMX
    )
    assert response.status_code == 400
    assert response["X-Decision-Error"] == "1"
    assert "reason is required" in response.content.decode()
    assert _state(high_request) == (RequestState.PENDING, 0, None)


def test_non_htmx_get_of_decide_redirects_to_detail(bob, medium_request):
    response = bob.get(reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "deny"})
    assert response.status_code == 302
    assert response["Location"].endswith(f"/approvals/{medium_request.public_id}/?decide=deny#decide")


# --- forged / bad POSTs: refused and nothing changes ---------------------------------------------


def test_wrong_role_is_403(client, owner, medium_request):
    outsider = UserFactory(username="eve", roles=["owner"])
    client.force_login(outsider)
    response = client.post(
        reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "approve", "reason": "x"}
    )
    assert response.status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_own_request_is_403(client, make_request, approver):
    req = make_request(owner=approver)
    client.force_login(approver)
    response = client.post(reverse("approvals:decide", args=[req.public_id]), {"decision": "approve", "reason": "x"})
    assert response.status_code == 403
    assert _state(req) == (RequestState.PENDING, 0, None)


def test_requester_token_owner_is_403(client, make_request, approver):
    req = make_request(token=TokenFactory(owner=approver))
    client.force_login(approver)
    response = client.post(reverse("approvals:decide", args=[req.public_id]), {"decision": "deny", "reason": "x"})
    assert response.status_code == 403
    assert _state(req) == (RequestState.PENDING, 0, None)


def test_already_decided_is_409(bob, make_request, approver2):
    req = make_request(state=RequestState.DENIED)
    response = bob.post(reverse("approvals:decide", args=[req.public_id]), {"decision": "approve", "reason": "x"})
    assert response.status_code == 409
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.DENIED
    assert not Decision.objects.filter(request=req).exists()


def test_second_approval_by_same_person_is_409(bob, high_request, approver):
    request_approve(reg_request=high_request, approver=approver, reason="first")
    response = bob.post(
        reverse("approvals:decide", args=[high_request.public_id]), {"decision": "approve", "reason": "again"}
    )
    assert response.status_code == 409
    assert _state(high_request) == (RequestState.PENDING, 1, None)


def test_widened_scopes_is_400(bob, medium_request):
    response = bob.post(
        reverse("approvals:decide", args=[medium_request.public_id]),
        {"decision": "approve", "narrow": "on", "scopes": ["tickets:read", "db:prod:read"]},
    )
    assert response.status_code == 400
    assert "only narrow" in response.content.decode()
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_longer_ttl_is_400(bob, medium_request):
    response = bob.post(
        reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "approve", "ttl_seconds": "999999"}
    )
    assert response.status_code == 400
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_missing_reason_is_400(bob, medium_request, high_request):
    response = bob.post(reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "deny"})
    assert response.status_code == 400
    assert "reason is required" in response.content.decode()
    response = bob.post(reverse("approvals:decide", args=[high_request.public_id]), {"decision": "approve"})
    assert response.status_code == 400
    assert _state(medium_request) == (RequestState.PENDING, 0, None)
    assert _state(high_request) == (RequestState.PENDING, 0, None)


def test_bad_decision_value_is_400(bob, medium_request):
    response = bob.post(reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "maybe"})
    assert response.status_code == 400
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_missing_csrf_is_403(approver, medium_request):
    csrf_client = HttpClient(enforce_csrf_checks=True)
    csrf_client.force_login(approver)
    response = csrf_client.post(
        reverse("approvals:decide", args=[medium_request.public_id]), {"decision": "approve", "reason": "x"}
    )
    assert response.status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)


def test_unknown_request_is_404(bob):
    assert bob.post(reverse("approvals:decide", args=["reg_nope"]), {"decision": "deny"}).status_code == 404


# --- owner's view ------------------------------------------------------------------------------


def test_mine_lists_requests_made_with_my_tokens_and_decisions(client, owner, make_request, approver):
    decided = make_request(client_name="was-denied")
    from approvals.services import request_deny

    request_deny(reg_request=decided, approver=approver, reason="too broad")
    make_request(client_name="still-pending")
    RequestFactory(client_name="someone-elses")
    client.force_login(owner)
    html = client.get(reverse("approvals:mine")).content.decode()
    assert "was-denied" in html and "too broad" in html and "still-pending" in html
    assert "someone-elses" not in html
    assert html.count("Withdraw</button>") == 1


def test_owner_withdraws_and_others_cannot(client, owner, medium_request, approver):
    client.force_login(approver)
    assert client.post(reverse("approvals:withdraw", args=[medium_request.public_id])).status_code == 403
    assert _state(medium_request) == (RequestState.PENDING, 0, None)
    client.force_login(owner)
    response = client.post(reverse("approvals:withdraw", args=[medium_request.public_id]), follow=True)
    assert "Withdrew" in response.content.decode()
    assert RegistrationRequest.objects.get(pk=medium_request.pk).state == RequestState.WITHDRAWN
    again = client.post(reverse("approvals:withdraw", args=[medium_request.public_id]))
    assert again.status_code == 409


def test_detail_explains_why_you_cannot_decide(client, make_request, approver, approver2):
    sponsored_by_token = make_request(token=TokenFactory(owner=approver))
    client.force_login(approver)
    html = client.get(reverse("approvals:detail", args=[sponsored_by_token.public_id])).content.decode()
    assert "requested or sponsor this client" in html and 'data-action="approve"' not in html
    decided = make_request(RiskTier.HIGH)
    request_approve(reg_request=decided, approver=approver2, reason="first")
    client.force_login(approver2)
    html = client.get(reverse("approvals:detail", args=[decided.public_id])).content.decode()
    assert "already decided" in html and 'data-action="approve"' not in html
    client.force_login(approver)
    html = client.get(reverse("approvals:detail", args=[decided.public_id])).content.decode()
    assert 'data-action="approve"' in html


def test_mine_query_count_is_constant(client, owner, team, idp, catalogue, approver):
    token = TokenFactory(owner=owner)
    reqs = bulk_pending(10, owner=owner, team=team, idp=idp, token=token)
    request_approve(reg_request=RegistrationRequest.objects.get(pk=reqs[1].pk), approver=approver, reason="x")
    client.force_login(owner)
    url = reverse("approvals:mine")
    small = _count_queries(client, url)
    RegistrationRequest.objects.bulk_create(
        [
            RegistrationRequest(
                public_id=f"reg_mine{i:06d}",
                via="token",
                client_name=f"m{i}",
                owner=owner,
                token=token,
                requested_scopes=["docs:read"],
                risk_tier=RiskTier.MEDIUM,
            )
            for i in range(490)
        ]
    )
    assert _count_queries(client, url) == small


def test_detail_names_software_statement_proof(bob, make_request, owner):
    from approvals.models import TrustedIssuer

    issuer = TrustedIssuer.objects.create(
        name="CI runners",
        issuer="https://ci.example",
        audience="registrar",
        subject="repo:acme/*",
        owner=owner,
        purpose="CI deploy jobs",
    )
    req = make_request(token=None, issuer=issuer, via="software_statement", statement_subject="repo:acme/web")
    RegistrationRequest.objects.filter(pk=req.pk).update(token=None)
    html = bob.get(reverse("approvals:detail", args=[req.public_id])).content.decode()
    assert "CI runners" in html and "repo:acme/web" in html and "CI deploy jobs" in html
