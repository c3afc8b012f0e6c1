"""Login throttling: keyed on the real client address behind a trusted proxy, and per account by slowing
down, never by locking the real person out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import override_settings

from portal import loginthrottle
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
PROXY = "10.0.0.2"  # the reverse proxy: every request arrives from it
PASSWORD = "pw-for-tests-1"  # tests.factories.UserFactory
TOO_MANY = "Too many failed login attempts"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def behind_one_proxy():
    with override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=1):
        yield


def attempt(client, login: str, password: str, *, remote: str = "127.0.0.1", xff: str | None = None):
    client.logout()
    headers = {"REMOTE_ADDR": remote}
    if xff is not None:
        headers["HTTP_X_FORWARDED_FOR"] = xff
    response = client.post("/accounts/login/", {"login": login, "password": password}, **headers)
    if response.status_code == 302:
        return "in"
    assert response.status_code == 200, response.status_code
    return "throttled" if TOO_MANY in response.content.decode() else "wrong"


def test_trusted_proxy_settings_come_from_the_environment():
    snippet = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.ALLAUTH_TRUSTED_PROXY_COUNT, s.ALLAUTH_TRUSTED_CLIENT_IP_HEADER, "
        "s.ACCOUNT_RATE_LIMITS['login_failed'])"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRAR_TRUSTED")}
    base |= {"DJANGO_SETTINGS_MODULE": "portal.settings", "REGISTRAR_EMBEDDED": "1", "DEBUG": "true"}

    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", snippet], env=base | env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    default = run()
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["0", "None", "10/1m/ip,5/5m/key"]  # no proxy trusted: X-Forwarded-For ignored
    configured = run(
        REGISTRAR_TRUSTED_PROXY_COUNT="2",
        REGISTRAR_TRUSTED_CLIENT_IP_HEADER="X-Real-IP",
        REGISTRAR_LOGIN_FAILURES_PER_ADDRESS="20/m",
        REGISTRAR_LOGIN_FAILURES_PER_ACCOUNT="3/10m",
    )
    assert configured.returncode == 0, configured.stderr
    assert configured.stdout.split() == ["2", "X-Real-IP", "20/1m/ip,3/10m/key"]
    bad = run(REGISTRAR_LOGIN_FAILURES_PER_ACCOUNT="five a minute")
    assert bad.returncode != 0 and "REGISTRAR_LOGIN_FAILURES_PER_ACCOUNT" in bad.stderr


def test_a_brute_force_behind_the_proxy_locks_out_only_its_own_address(client, behind_one_proxy):
    """Regression: ten failed logins from one address locked out every user behind it; behind a reverse
    proxy (REMOTE_ADDR is the proxy) that was everyone."""
    UserFactory(username="bob", roles=["approver"])
    UserFactory(username="alice", roles=["owner"])
    attacker = "203.0.113.66"
    results = [attempt(client, f"guess{i}", "nope", remote=PROXY, xff=attacker) for i in range(12)]
    assert results[:10] == ["wrong"] * 10 and results[10:] == ["throttled"] * 2
    assert attempt(client, "alice", PASSWORD, remote=PROXY, xff=attacker) == "throttled"  # the offending address
    assert attempt(client, "bob", PASSWORD, remote=PROXY, xff="198.51.100.7") == "in"
    assert attempt(client, "alice", PASSWORD, remote=PROXY, xff="198.51.100.8") == "in"


def test_five_wrong_passwords_do_not_lock_a_named_approver_out(client, behind_one_proxy):
    """Regression: five failed logins for an account from anywhere locked that account for everyone."""
    UserFactory(username="bob", roles=["approver"])
    attacker = "203.0.113.66"
    assert [attempt(client, "bob", f"guess{i}", remote=PROXY, xff=attacker) for i in range(7)] == (
        ["wrong"] * 5 + ["throttled"] * 2
    )
    assert attempt(client, "bob", PASSWORD, remote=PROXY, xff=attacker) == "throttled"  # not from there
    assert attempt(client, "bob", PASSWORD, remote=PROXY, xff="198.51.100.7") == "in"  # the real bob
    assert attempt(client, "bob@example.com", PASSWORD, remote=PROXY, xff="198.51.100.9") == "in"


def test_a_spoofed_x_forwarded_for_is_ignored_when_no_proxy_is_trusted(client):
    UserFactory(username="bob", roles=["approver"])
    results = [attempt(client, f"guess{i}", "nope", remote="203.0.113.66", xff=f"198.51.100.{i}") for i in range(12)]
    assert results[10:] == ["throttled"] * 2  # counted on REMOTE_ADDR, whatever the header claims
    assert attempt(client, "bob", PASSWORD, remote="203.0.113.66", xff="198.51.100.7") == "throttled"
    assert attempt(client, "bob", PASSWORD, remote="198.51.100.7") == "in"


def test_a_trusted_client_ip_header_names_the_address(client):
    UserFactory(username="bob", roles=["approver"])
    with override_settings(ALLAUTH_TRUSTED_CLIENT_IP_HEADER="X-Real-IP"):
        for i in range(10):
            client.post(
                "/accounts/login/",
                {"login": f"g{i}", "password": "x"},
                REMOTE_ADDR=PROXY,
                HTTP_X_REAL_IP="203.0.113.66",
            )
        refused = client.post(
            "/accounts/login/", {"login": "bob", "password": PASSWORD}, REMOTE_ADDR=PROXY, HTTP_X_REAL_IP="203.0.113.66"
        )
        assert TOO_MANY in refused.content.decode()
        ok = client.post(
            "/accounts/login/", {"login": "bob", "password": PASSWORD}, REMOTE_ADDR=PROXY, HTTP_X_REAL_IP="198.51.100.7"
        )
        assert ok.status_code == 302


def test_a_proxy_count_larger_than_the_header_falls_back_to_the_peer_address(client):
    """A client talking to Registrar directly cannot pick its address by sending a short X-Forwarded-For."""
    UserFactory(username="bob", roles=["approver"])
    with override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=2):
        for i in range(10):
            attempt(client, f"g{i}", "x", remote="203.0.113.66", xff=f"198.51.100.{i}")
        assert attempt(client, "bob", PASSWORD, remote="203.0.113.66", xff="198.51.100.99") == "throttled"


def test_many_addresses_against_one_account_are_slowed_down_not_locked_out(client, behind_one_proxy, monkeypatch):
    """A distributed guess at one account: after REGISTRAR_LOGIN_SLOWDOWN_AFTER failures each further try
    from an address the account never signed in from waits longer (doubling up to the cap); the owner's
    usual address is not slowed, and a new address gets in once the wait is over."""
    clock = [1_000_000.0]
    monkeypatch.setattr(loginthrottle, "now", lambda: clock[0])
    UserFactory(username="bob", roles=["approver"])
    assert attempt(client, "bob", PASSWORD, remote=PROXY, xff="198.51.100.7") == "in"  # bob's usual address

    for i in range(10):  # ten addresses, one guess each: under every per-address limit
        assert attempt(client, "bob", "guess", remote=PROXY, xff=f"203.0.113.{i}") == "wrong"
    assert loginthrottle.wait_seconds(account="bob", address="203.0.113.200") == 1
    assert attempt(client, "bob", "guess", remote=PROXY, xff="203.0.113.50") == "throttled"
    assert attempt(client, "bob", PASSWORD, remote=PROXY, xff="198.51.100.7") == "in"  # known address: no wait

    clock[0] += 1
    assert attempt(client, "bob", "guess", remote=PROXY, xff="203.0.113.51") == "wrong"  # after the wait
    assert loginthrottle.wait_seconds(account="bob", address="203.0.113.200") == 2  # doubled
    for i in range(20):
        clock[0] += loginthrottle.wait_seconds(account="bob", address="203.0.113.200")
        assert attempt(client, "bob", "guess", remote=PROXY, xff=f"203.0.113.{100 + i}") == "wrong"
    assert loginthrottle.wait_seconds(account="bob", address="203.0.113.200") == 300  # capped, never forever

    clock[0] += 300
    assert attempt(client, "bob", PASSWORD, remote=PROXY, xff="198.51.100.99") == "in"  # a new address, later
    # other accounts are untouched
    UserFactory(username="alice")
    assert attempt(client, "alice", PASSWORD, remote=PROXY, xff="203.0.113.53") == "in"
