"""What an approver sees of a CIMD request (the document, its hash, hosts, redirect hosts, who submitted it),
and who may pre-register (portal.roles.can_preregister)."""

from __future__ import annotations

import hashlib
import json

import pytest

from approvals.selectors import cimd_for_request
from portal.roles import can_preregister
from tests.factories import RequestFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "https://tools.example.com/oauth/client.json"
DOCUMENT = {
    "client_id": URL,
    "client_name": "Desk Agent",
    "redirect_uris": ["https://tools.example.com/cb", "https://login.partner.example/cb", "http://127.0.0.1:8123/cb"],
    "token_endpoint_auth_method": "none",
}


def cimd_request(**fields):
    body = json.dumps(DOCUMENT).encode()
    return RequestFactory(
        via="cimd",
        cimd_url=URL,
        cimd_document=DOCUMENT,
        cimd_sha256=hashlib.sha256(body).hexdigest(),
        client_name="Desk Agent",
        **fields,
    )


def test_the_selector_gives_the_document_with_its_hosts():
    shown = cimd_for_request(cimd_request())
    assert shown.url == URL and len(shown.sha256) == 64
    assert shown.review.host == "tools.example.com"
    assert [(r.host, r.same_host, r.loopback) for r in shown.review.redirects] == [
        ("tools.example.com", True, False),
        ("login.partner.example", False, False),
        ("127.0.0.1", False, True),
    ]
    assert json.loads(shown.text) == DOCUMENT
    assert cimd_for_request(RequestFactory()) is None


def test_the_approver_sees_the_document_hash_hosts_and_submitter(client, approver):
    submitter = UserFactory(username="sam", roles=["admin"])
    req = cimd_request(submitted_by=submitter)
    client.force_login(approver)
    page = client.get(f"/approvals/{req.public_id}/").content.decode()
    assert URL in page and req.cimd_sha256 in page
    assert "<code>tools.example.com</code>" in page
    assert "<code>login.partner.example</code> — <strong>differs from the client_id host</strong>" in page
    assert "<code>127.0.0.1</code> — loopback" in page
    assert "Pre-registered by <strong>sam</strong>" in page
    assert "&quot;client_name&quot;: &quot;Desk Agent&quot;" in page


def test_who_may_pre_register():
    owner = UserFactory(username="o1", roles=["owner"])
    other = UserFactory(username="o2", roles=["owner"])
    admin = UserFactory(username="a1", roles=["admin"])
    approver_only = UserFactory(username="ap", roles=["approver"])
    robot = UserFactory(username="svc", roles=["admin"], is_service_account=True)
    assert can_preregister(owner, None) and can_preregister(owner, owner)
    assert not can_preregister(owner, other)
    assert can_preregister(admin, other) and can_preregister(admin, None)
    assert not can_preregister(approver_only, None)
    assert not can_preregister(robot, other)
