"""Software statements are short-lived and accepted once: ``jti`` required, life bounded by the policy, a ``jti``
used by an accepted or pending registration refused ever after — also under concurrency, over a live server."""

# ruff: noqa: F811 - fixtures imported from test_statements are test parameters here

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from approvals.models import RegistrationRequest, SoftwareStatementUse
from approvals.oauth2 import cache, credentials, errors, register
from approvals.policy import PolicyConfig
from approvals.policy_store import policy_publish
from approvals.statements import statement_uses_purge, verify_software_statement
from inventory.models import Client
from portal.audit import Actor
from tests.approvals.intake_support import (  # noqa: F401
    _fresh_limits_and_policy,
    counts,
    fold_refusals,
    low_body,
    post,
)
from tests.approvals.test_statements import (  # noqa: F401 - fixtures
    ISSUER,
    SPIFFE_KEY,
    ci_owner,
    oidc_rule,
    sign,
    spiffe_rule,
)

ROOT = Path(__file__).resolve().parents[2]
TEN_YEARS = 10 * 365 * 86400
pytestmark = pytest.mark.django_db


def _refused(response, fragment: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_software_statement", body
    assert fragment in body["error_description"], body["error_description"]


# --- lifetime and jti ---------------------------------------------------------------------------------


def test_a_ten_year_statement_without_jti_is_refused_every_time(client, oidc_rule):
    """Regression: a statement valid for 10 years, without jti, was accepted three times."""
    now = int(time.time())
    statement = sign({"scope": "tickets:read"}, iat=now, exp=now + TEN_YEARS, drop=("jti",))
    before = counts()
    for _ in range(3):
        _refused(post(client, low_body(software_statement=statement)), "software statement")
    assert counts() == before  # nothing registered, and rejected statements are counted, not chained
    assert not Client.objects.exists()
    [event] = fold_refusals()  # one event for the source and minute, with the count
    assert event.action == "registration.statement_rejected" and event.after["count"] == 3


def test_a_long_lived_statement_is_refused_even_with_a_jti(client, oidc_rule):
    now = int(time.time())
    statement = sign({"scope": "tickets:read"}, iat=now, exp=now + TEN_YEARS)
    _refused(
        post(client, low_body(software_statement=statement)),
        f"software statement lives {TEN_YEARS} s (exp - iat); at most 3600 s are accepted",
    )


def test_a_statement_without_jti_is_refused(client, oidc_rule):
    _refused(
        post(client, low_body(software_statement=sign({"scope": "tickets:read"}, drop=("jti",)))),
        "software statement has no jti claim",
    )


@pytest.mark.parametrize("jti", ["", "   ", 42, "x" * 256, "line\nbreak"])
def test_a_jti_must_be_a_short_printable_string(client, oidc_rule, jti):
    _refused(post(client, low_body(software_statement=sign({"scope": "tickets:read"}, jti=jti))), "jti")


def test_the_lifetime_bound_is_a_policy_threshold(client, oidc_rule, admin_user):
    now = int(time.time())
    ninety_minutes = sign({"scope": "tickets:read"}, iat=now, exp=now + 5400)
    _refused(post(client, low_body(software_statement=ninety_minutes)), "at most 3600 s are accepted")
    policy_publish(actor=Actor.user(admin_user), thresholds={"max_statement_lifetime_seconds": 7200})
    cache.clear_caches()
    from approvals import policy_store

    policy_store.clear_cache()
    assert post(client, low_body(software_statement=ninety_minutes)).status_code == 201


def test_the_bound_holds_for_exp_from_now(oidc_rule):
    now = int(time.time())
    with pytest.raises(Exception, match="lives 900 s"):
        verify_software_statement(sign(iat=now, exp=now + 900), max_lifetime=600)
    assert verify_software_statement(sign(iat=now, exp=now + 600), max_lifetime=600).jti


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (59, "max_statement_lifetime_seconds must be between 60 and 86400, got 59"),
        (86401, "max_statement_lifetime_seconds must be between 60 and 86400, got 86401"),
        ("3600", "max_statement_lifetime_seconds must be an integer, got str"),
    ],
)
def test_the_policy_threshold_is_validated(value, message):
    with pytest.raises(ValueError, match="invalid policy config") as info:
        PolicyConfig.from_dict({"max_statement_lifetime_seconds": value}, version=2)
    assert message in str(info.value)


# --- once ---------------------------------------------------------------------------------------------


def test_a_replayed_statement_is_refused(client, oidc_rule):
    statement = sign({"scope": "tickets:read"}, jti="run-4711")
    assert post(client, low_body(software_statement=statement)).status_code == 201
    before = counts()
    _refused(
        post(client, low_body(software_statement=statement)),
        f"software statement jti 'run-4711' of issuer '{ISSUER}' was already used",
    )
    assert counts() == before
    [event] = fold_refusals()
    assert event.action == "registration.statement_rejected" and "already used" in event.reason
    use = SoftwareStatementUse.objects.get()
    assert (use.issuer, use.jti, use.registration_id) == (
        ISSUER,
        "run-4711",
        RegistrationRequest.objects.get().public_id,
    )


def test_a_pending_registration_uses_the_jti(client, oidc_rule):
    statement = sign({"scope": "tickets:write"}, jti="pending-1")
    assert post(client, low_body(software_statement=statement)).status_code == 202
    _refused(post(client, low_body(software_statement=statement)), "already used")


def test_a_refused_registration_does_not_use_the_jti(client, oidc_rule):
    """Like an initial access token: a policy refusal leaves the statement usable while it lives."""
    refused = post(client, low_body(software_statement=sign({"scope": "crm:read"}, jti="retry-me")))
    assert refused.status_code == 400 and refused.json()["error"] == "unapproved_software_statement"
    assert RegistrationRequest.objects.get().state == "refused"
    assert not SoftwareStatementUse.objects.exists()
    assert post(client, low_body(software_statement=sign({"scope": "tickets:read"}, jti="retry-me"))).status_code == 201


def test_a_jti_is_unique_per_issuer(client, oidc_rule, spiffe_rule):
    assert post(client, low_body(software_statement=sign({"scope": "tickets:read"}, jti="shared"))).status_code == 201
    spiffe = sign(
        {"sub": "spiffe://prod.example.org/ns/agents/sa/x", "aud": "registrar", "scope": "tickets:read"},
        key=SPIFFE_KEY,
        alg="ES256",
        drop=("iss",),
        jti="shared",
    )
    assert post(client, low_body(software_statement=spiffe)).status_code == 201
    assert sorted(SoftwareStatementUse.objects.values_list("issuer", flat=True)) == [
        ISSUER,
        "spiffe://prod.example.org",
    ]


def test_a_jti_used_meanwhile_is_caught_by_the_database(oidc_rule):
    """The winner of a race commits between the loser's check and its write: the unique constraint, in the
    registration's own statement, refuses the loser, and the client it had already created is rolled back."""
    statement = sign({"scope": "tickets:read"}, jti="raced")
    requester = credentials.requester_authenticate(bearer=None, body={"software_statement": statement})
    SoftwareStatementUse.objects.create(
        issuer=ISSUER,
        jti="raced",
        expires_at=timezone.now() + dt.timedelta(hours=1),
        registration_id="reg_winner",
        used_at=timezone.now(),
    )
    before = counts()
    with pytest.raises(errors.BadRequest) as info:
        register.registration_submit(requester=requester, body=low_body(software_statement=statement))
    assert info.value.error == "invalid_software_statement" and "already used" in info.value.description
    assert counts() == before  # not the request, not its client, not an audit event


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_register_exactly_once(live_server, oidc_rule):
    """16 workloads send one statement at once on real PostgreSQL connections: one gets in, 15 get 400."""
    statement = sign({"scope": "tickets:read"}, jti="burst")

    def register(i: int) -> tuple[int, str]:
        with requests.Session() as http:
            response = http.post(
                f"{live_server.url}/oauth2/register",
                timeout=30,
                json=low_body(client_name=f"racer-{i}", software_statement=statement),
            )
            return response.status_code, response.json().get("error", "")

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(register, range(16)))
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1 and statuses.count(400) == 15, results
    assert {error for status, error in results if status == 400} == {"invalid_software_statement"}
    assert RegistrationRequest.objects.count() == 1 and Client.objects.count() == 1
    assert SoftwareStatementUse.objects.get().registration_id == RegistrationRequest.objects.get().public_id


# --- forgetting expired statements -------------------------------------------------------------------------


def test_expired_statement_uses_are_purged(db):
    now = timezone.now()
    for jti, expires in (
        ("old", now - dt.timedelta(hours=2)),
        ("in-leeway", now - dt.timedelta(seconds=30)),
        ("live", now + dt.timedelta(minutes=5)),
    ):
        SoftwareStatementUse.objects.create(
            issuer=ISSUER, jti=jti, expires_at=expires, registration_id="reg_x", used_at=now
        )
    assert statement_uses_purge(now=now) == 1
    assert sorted(SoftwareStatementUse.objects.values_list("jti", flat=True)) == ["in-leeway", "live"]
    out = StringIO()
    call_command("purge_statement_uses", stdout=out)
    assert out.getvalue().strip() == "purged=0"


def test_the_purge_task_is_scheduled():
    from portal.celery import app

    entries = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "approvals.tasks.purge_statement_uses" in entries


# --- SQLite (the embedded demo) takes the same path ------------------------------------------------------

SQLITE_SCRIPT = r"""
import json, time, uuid, django
django.setup()
from django.db import connection
from django.test import Client as HttpClient
from django.utils import timezone
from joserfc import jwt
from joserfc.jwk import ECKey
from approvals.oauth2 import credentials, errors, register
from approvals.models import RegistrationRequest, SoftwareStatementUse, TrustedIssuer
from inventory.models import IdPConnection, ScopeDefinition
from portal.models import User

assert connection.vendor == "sqlite", connection.vendor
ScopeDefinition.objects.create(name="tickets:read", sensitivity="low", category="internal_tool")
IdPConnection.objects.create(name="dry", kind="dry-run", is_default=True,
                             config={"issuer": "https://idp.demo", "token_endpoint": "https://idp.demo/token"})
owner = User.objects.create_user("ci", "ci@example.com", "x" * 20)
key = ECKey.generate_key("P-256", parameters={"kid": "ci"})
TrustedIssuer.objects.create(name="CI", kind="oidc", issuer="https://ci.demo", audience="registrar",
                             jwks={"keys": [key.as_dict(private=False)]}, subject="repo:*", owner=owner,
                             purpose="CI agents", allowed_scopes=["tickets:read"], internal_only=True)
now = int(time.time())
def statement(jti):
    claims = {"iss": "https://ci.demo", "sub": "repo:a", "aud": "registrar", "iat": now, "exp": now + 300,
              "jti": jti, "scope": "tickets:read"}
    return jwt.encode({"alg": "ES256", "kid": "ci"}, claims, key)
jwks = {"keys": [ECKey.generate_key("P-256").as_dict(private=False)]}
def body(s):
    return json.dumps({"client_name": "agent", "purpose": "sqlite demo agent", "jwks": jwks, "internal_only": True,
                       "requested_ttl": 3600, "software_statement": s})
http = HttpClient()
out = {}
once = statement("one")
out["first"] = http.post("/oauth2/register", body(once), content_type="application/json").status_code
out["replay"] = http.post("/oauth2/register", body(once), content_type="application/json").status_code
raced = statement("raced")
requester = credentials.requester_authenticate(bearer=None, body={"software_statement": raced})
SoftwareStatementUse.objects.create(issuer="https://ci.demo", jti="raced", expires_at=timezone.now(),
                                    registration_id="reg_winner", used_at=timezone.now())
try:
    register.registration_submit(requester=requester, body=json.loads(body(raced)))
    out["raced"] = "accepted"
except errors.BadRequest as exc:
    out["raced"] = exc.error
out["requests"] = RegistrationRequest.objects.count()
out["uses"] = sorted(SoftwareStatementUse.objects.values_list("jti", flat=True))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_statement_replay_is_refused_on_sqlite(tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "true",
        "REGISTRAR_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "ERROR",
    }
    run = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 600}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], **run)
    assert migrate.returncode == 0, migrate.stderr
    result = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], **run)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "first": 201,
        "replay": 400,
        "raced": "invalid_software_statement",
        "requests": 1,
        "uses": ["one", "raced"],
    }
