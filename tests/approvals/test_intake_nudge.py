"""The inline 201 path delivers the new client itself; a worker is nudged only when that does not work out.

Nudging a worker on commit (as every other outbox write does) made it race the web process for the entry it was
about to deliver, and a registration the IdP accepted in milliseconds was answered 202 whenever the worker won.
"""

from __future__ import annotations

import pytest
from celery.signals import before_task_publish

from approvals.choices import RequestState
from inventory.choices import IdPKind
from tests.approvals.intake_support import (  # noqa: F401 - autouse fixture
    _fresh_limits_and_policy,
    low_body,
    make_token,
    post,
)
from tests.factories import IdPFactory
from tests.portal.loopback import closed_port

pytestmark = pytest.mark.django_db
DELIVER = "inventory.tasks.deliver_client_outbox"


@pytest.fixture
def published():
    names: list[str] = []

    def capture(sender=None, **_kwargs):
        names.append(sender)

    before_task_publish.connect(capture, weak=False, dispatch_uid="test_intake_nudge")
    yield names
    before_task_publish.disconnect(dispatch_uid="test_intake_nudge")


def test_a_registration_delivered_inline_nudges_no_worker(
    client, catalogue, idp, owner, published, django_capture_on_commit_callbacks
):
    _, plaintext = make_token(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, low_body(), plaintext)
    assert response.status_code == 201
    assert DELIVER not in published


def test_a_registration_the_idp_could_not_take_inline_is_handed_to_a_worker_at_once(
    client, catalogue, owner, published, django_capture_on_commit_callbacks
):
    base = f"http://127.0.0.1:{closed_port()}"
    IdPFactory(
        name="down",
        kind=IdPKind.RFC7591,
        is_default=True,
        secrets={"initial_access_token": "iat"},
        config={"issuer": base, "registration_endpoint": f"{base}/reg", "token_endpoint": f"{base}/token"},
    )
    _, plaintext = make_token(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, low_body(), plaintext)
    assert response.status_code == 202
    assert response.json()["status"] == "provisioning"
    assert published == [DELIVER]


def test_an_approval_still_nudges_a_worker(approver, published, django_capture_on_commit_callbacks, make_request):
    from approvals.services import request_approve

    request = make_request()
    with django_capture_on_commit_callbacks(execute=True):
        request_approve(reg_request=request, approver=approver, reason="ok")
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED
    assert DELIVER in published
