"""While the database cannot be reached: 503 with Retry-After (JSON for agents, a short page for people), one
warning per outage, /healthz 200 and /readyz 503, and service again once it answers (portal.unavailable).

"Cannot be reached" is simulated here by making every new database cursor fail the way psycopg does when the
server refuses connections; tests/faults/ stops a real PostgreSQL under load."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from unittest import mock

import psycopg
import psycopg.errors
import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper

from portal import unavailable
from portal.unavailable import is_database_unavailable, outage


@pytest.fixture(autouse=True)
def _fresh_outage():
    outage.reset()
    yield
    outage.reset()


def _refused() -> OperationalError:
    try:
        try:
            raise psycopg.OperationalError('connection to server at "127.0.0.1", port 5999 failed: Connection refused')
        except psycopg.OperationalError as driver:
            raise OperationalError(*driver.args) from driver
    except OperationalError as exc:
        return exc


@pytest.fixture
def browser():
    """A client with a session cookie: the page needs the database to find out who is asking. A middleware
    (authentication, MFA) meets the outage outside any view; the test client would re-raise that exception
    (Django signals it), where a server answers: so this client answers, as gunicorn would."""
    from django.test import Client

    browser = Client(raise_request_exception=False)
    browser.cookies["sessionid"] = "a-session-the-database-would-have-to-look-up"
    return browser


@contextmanager
def database_down():
    """Every attempt to use the database fails as a refused connection does; yields the attempt counter."""
    attempts = mock.Mock(side_effect=lambda *a, **k: (_ for _ in ()).throw(_refused()))
    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", attempts):
        yield attempts


def _wrapped(driver_exc: BaseException) -> OperationalError:
    exc = OperationalError(str(driver_exc))
    exc.__cause__ = driver_exc
    return exc


def test_connection_failures_and_shutdowns_are_outages_statement_problems_are_not():
    assert is_database_unavailable(_refused())
    assert is_database_unavailable(_wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert is_database_unavailable(_wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")))
    assert is_database_unavailable(_wrapped(psycopg.errors.ConnectionFailure("server closed the connection")))
    assert not is_database_unavailable(_wrapped(psycopg.errors.QueryCanceled("statement timeout")))
    assert not is_database_unavailable(_wrapped(psycopg.errors.LockNotAvailable("lock timeout")))
    assert not is_database_unavailable(ValueError("no"))


def test_an_agent_gets_the_rfc7591_error_with_retry_after(client):
    with database_down():
        response = client.post(
            "/oauth2/register",
            data={"client_name": "x", "redirect_uris": ["https://a.example/cb"]},
            content_type="application/json",
            HTTP_AUTHORIZATION="Bearer reg_whatever",
        )
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "temporarily_unavailable"
    assert response["Retry-After"] == str(unavailable.RETRY_AFTER_SECONDS)
    assert response["Cache-Control"] == "no-store"
    assert "X-Request-ID" in response


def test_the_rest_api_answers_json_too(client):
    with database_down():
        response = client.get("/api/v1/clients/", HTTP_AUTHORIZATION="Token whatever")
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"


def test_a_person_gets_the_short_page_without_a_session_lookup(browser):
    with database_down():
        response = browser.get("/approvals/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(unavailable.RETRY_AFTER_SECONDS)
    body = response.content.decode()
    assert "Registrar is briefly unavailable" in body
    assert "Traceback" not in body
    assert "sessionid" not in response.cookies


def test_one_warning_per_outage_and_no_stack_traces(browser, caplog):
    caplog.set_level(logging.INFO)
    with database_down():
        for path in ("/approvals/", "/oauth2/register", "/api/v1/clients/", "/", "/approvals/"):
            assert browser.get(path).status_code == 503
    warnings = [r for r in caplog.records if r.name == "portal.unavailable"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    assert "event=database_unavailable" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_during_an_outage_requests_do_not_wait_on_the_database(browser):
    with database_down() as attempts:
        assert browser.get("/approvals/").status_code == 503  # opens the outage
        opened = attempts.call_count
        for _ in range(20):
            assert browser.get("/approvals/").status_code == 503
    # within one probe interval nobody tries again (a stopped server would otherwise take every request's time)
    assert attempts.call_count == opened


def test_healthz_stays_200_and_readyz_turns_503(browser):
    with database_down():
        assert browser.get("/approvals/").status_code == 503
        assert browser.get("/healthz", REMOTE_ADDR="127.0.0.1").status_code == 200
        ready = browser.get("/readyz", REMOTE_ADDR="127.0.0.1")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "fail"


@pytest.mark.django_db
def test_once_the_database_answers_the_next_probe_serves_the_request_and_closes_the_outage(client, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    with database_down():
        assert client.get("/accounts/login/").status_code == 503
        monkeypatch.setattr(unavailable, "PROBE_INTERVAL_SECONDS", 0.0)
        assert client.get("/accounts/login/").status_code == 503  # probed, still down
    assert outage.active
    assert client.get("/accounts/login/").status_code == 200
    assert not outage.active
    messages = [r.getMessage() for r in caplog.records if r.name == "portal.unavailable"]
    assert len(messages) == 2 and "event=database_available" in messages[1] and "refused=2" in messages[1]


def test_other_database_errors_still_propagate(rf):
    middleware = unavailable.DatabaseUnavailableMiddleware(lambda request: None)
    request = rf.get("/approvals/")
    assert middleware.process_exception(request, _wrapped(psycopg.errors.QueryCanceled("statement timeout"))) is None
    assert not outage.active
