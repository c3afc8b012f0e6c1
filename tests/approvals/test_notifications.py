"""Approver mail batching, owner mail on decision, Slack-compatible webhook; failures never block."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.core.cache import cache

from approvals import notifications
from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from approvals.services import request_approve, request_deny
from approvals.tasks import notify_approvers


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def test_approvers_get_at_most_one_mail_per_interval(settings, make_request, approver, approver2, owner):
    settings.REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES = 15
    make_request()
    assert notify_approvers.name == "approvals.tasks.notify_approvers"
    assert notify_approvers() == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["bob@example.com", "carol@example.com"]
    assert "1 registration request awaiting your decision" in mail.outbox[0].subject

    make_request()  # a new request inside the interval is batched, not mailed now
    assert notify_approvers() == 0
    assert len(mail.outbox) == 2

    for user in (approver, approver2):  # the interval passes
        cache.delete(notifications.CLAIM_KEY.format(pk=user.pk))
    assert notify_approvers() == 2
    assert "2 registration requests" in mail.outbox[-1].subject

    for user in (approver, approver2):
        cache.delete(notifications.CLAIM_KEY.format(pk=user.pk))
    assert notify_approvers() == 0  # nothing new since the last mail
    assert len(mail.outbox) == 4


def test_owner_of_request_is_not_asked_to_approve_it(settings, make_request, approver, approver2):
    make_request(owner=approver)
    assert notify_approvers() == 1
    assert mail.outbox[0].to == ["carol@example.com"]


def test_owner_mailed_on_decision(make_request, approver, django_capture_on_commit_callbacks):
    req = make_request(client_name="ticket-bot")
    with django_capture_on_commit_callbacks(execute=True):
        request_deny(reg_request=req, approver=approver, reason="too broad")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["olivia@example.com"]
    assert "denied" in mail.outbox[0].subject and "too broad" in mail.outbox[0].body


def test_no_owner_mail_for_intermediate_approval(high_request, approver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        request_approve(reg_request=high_request, approver=approver, reason="first")
    assert mail.outbox == []


def test_webhook_posted(settings, webhook, make_request, approver, django_capture_on_commit_callbacks):
    url, received = webhook
    settings.REGISTRAR_SLACK_WEBHOOK_URL = url
    req = make_request(client_name="ticket-bot")
    with django_capture_on_commit_callbacks(execute=True):
        request_approve(reg_request=req, approver=approver, reason="")
    assert received and received[-1]["path"] == "/hook"
    assert "ticket-bot" in received[-1]["json"]["text"] and "approved" in received[-1]["json"]["text"]


def test_failing_mail_and_webhook_never_block_a_decision(
    settings, make_request, approver, caplog, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "tests.approvals.test_notifications.BrokenBackend"
    settings.REGISTRAR_SLACK_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens"
    req = make_request()
    with django_capture_on_commit_callbacks(execute=True):
        request_deny(reg_request=req, approver=approver, reason="no")
    assert RegistrationRequest.objects.get(pk=req.pk).state == RequestState.DENIED
    assert "event=owner_mail_failed" in caplog.text
    make_request()
    assert notify_approvers() == 0
    assert "event=approver_mail_failed" in caplog.text
    assert notifications.slack_post("hi") is False
    assert "event=slack_webhook_failed" in caplog.text


class BrokenBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("smtp down")
