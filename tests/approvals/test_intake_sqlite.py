"""The demo's database (SQLite, ``make run``) takes registrations through the same hand-written hot path
(portal.rawsql, the audit append) as PostgreSQL: run in a subprocess on a fresh SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, django
django.setup()
from datetime import timedelta
from django.db import connection
from django.test import Client as HttpClient
from django.utils import timezone
from approvals.models import InitialAccessToken, RegistrationRequest
from inventory.models import IdPConnection, ScopeDefinition
from portal.audit import verify_chain
from portal.tlog.sequencer import log_seal
from portal.crypto import hash_token
from portal.models import AuditEvent, User

assert connection.vendor == "sqlite", connection.vendor
for name, sensitivity in (("tickets:read", "low"), ("tickets:write", "medium")):
    ScopeDefinition.objects.create(name=name, sensitivity=sensitivity, category="internal_tool")
IdPConnection.objects.create(name="dry", kind="dry-run", is_default=True,
                             config={"issuer": "https://idp.demo", "token_endpoint": "https://idp.demo/token"})
owner = User.objects.create_user("demo-owner", "o@example.com", "x" * 20)
plain = "rat_sqlite_" + "s" * 30
InitialAccessToken.objects.create(
    owner=owner, purpose="demo", prefix=plain[:12], token_hash=hash_token(plain),
    allowed_scopes=["tickets:read", "tickets:write"], max_ttl_seconds=86400, max_uses=5,
    expires_at=timezone.now() + timedelta(days=1),
)
jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "gV1J6obKVMtk6b-WBzqbYdKYHiQKHw4IcoqYh1ofjZE",
                  "y": "LT-DhnSDk1z4LY6Q2_n8-SnN_q8yPSL_S7iUyB5dlhU"}]}
out = {"status": {}}
http = HttpClient()
for scope in ("tickets:read", "tickets:write", "nope:x"):
    body = {"client_name": "agent", "purpose": "sqlite demo agent", "scope": scope, "jwks": jwks,
            "requested_ttl": 3600, "internal_only": True}
    response = http.post("/oauth2/register", json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION="Bearer " + plain)
    out["status"][scope] = response.status_code
out["uses"] = InitialAccessToken.objects.get().uses
out["requests"] = sorted(RegistrationRequest.objects.values_list("state", flat=True))
out["owners"] = sorted(set(RegistrationRequest.objects.values_list("owner__username", flat=True)))
out["actions"] = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
out["sealed"] = log_seal().sealed
checked, broken = verify_chain()
out["chain"] = [checked, None if broken is None else broken.problem]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """A migrated SQLite database file, made once for the module; each test runs on its own copy."""
    data_dir = tmp_path_factory.mktemp("sqlite-template")
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], **_run(data_dir))
    assert migrate.returncode == 0, migrate.stderr
    return data_dir / "registrar.sqlite3"


def _run(data_dir: Path, timeout: int = 600) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "REGISTRAR_EMBEDDED": "1",
        "DEBUG": "true",
        "REGISTRAR_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "ERROR",
    }
    return {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": timeout}


def _run_script(script: str, migrated: Path, data_dir: Path) -> dict:
    shutil.copy(migrated, data_dir / "registrar.sqlite3")
    result = subprocess.run([sys.executable, "-c", script], **_run(data_dir))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_registration_on_sqlite_writes_rows_and_a_valid_log(migrated, tmp_path):
    out = _run_script(SCRIPT, migrated, tmp_path)

    assert out["status"] == {"tickets:read": 201, "tickets:write": 202, "nope:x": 400}
    assert out["uses"] == 2  # accepted + pending consume a use, the refusal does not
    assert out["requests"] == ["approved", "pending", "refused"] and out["owners"] == ["demo-owner"]
    assert {"client.create", "registration.accepted", "client.active"} <= set(out["actions"])
    assert out["actions"][-2:] == ["registration.pending", "registration.refused"]
    assert out["sealed"] == len(out["actions"])
    assert out["chain"] == [len(out["actions"]), None]


RACE_SCRIPT = r"""
import json, threading, django
django.setup()
from datetime import timedelta
from django.db import connection
from django.test import Client as HttpClient
from django.utils import timezone
from approvals.models import InitialAccessToken, RegistrationRequest
from inventory.models import Client, IdPConnection, ScopeDefinition
from portal.crypto import hash_token
from portal.models import User

QUOTA, LIVE, BURST = 50, 45, 16
assert connection.vendor == "sqlite", connection.vendor
ScopeDefinition.objects.create(name="tickets:read", sensitivity="low", category="internal_tool")
idp = IdPConnection.objects.create(name="dry", kind="dry-run", is_default=True,
                                   config={"issuer": "https://idp.demo", "token_endpoint": "https://idp.demo/token"})
owner = User.objects.create_user("sqlite-owner", "o@example.com", "x" * 20)
Client.objects.bulk_create(Client(registration_id=f"reg_seed{i}", idp=idp, name=f"seed{i}", owner=owner,
                                  state="active", expires_at=timezone.now() + timedelta(hours=1)) for i in range(LIVE))
plain = "rat_sqlite_" + "r" * 30
token = InitialAccessToken.objects.create(
    owner=owner, purpose="demo", prefix=plain[:12], token_hash=hash_token(plain), allowed_scopes=["tickets:read"],
    max_ttl_seconds=86400, max_uses=100, expires_at=timezone.now() + timedelta(days=1),
)
jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "gV1J6obKVMtk6b-WBzqbYdKYHiQKHw4IcoqYh1ofjZE",
                  "y": "LT-DhnSDk1z4LY6Q2_n8-SnN_q8yPSL_S7iUyB5dlhU"}]}
# A second owner whose 16 parents each spawn a child (no token: the count is the transaction's first statement).
parent_owner = User.objects.create_user("sqlite-parents", "p@example.com", "x" * 20)
Client.objects.bulk_create(Client(registration_id=f"reg_other{i}", idp=idp, name=f"other{i}", owner=parent_owner,
                                  state="active", expires_at=timezone.now() + timedelta(hours=1))
                           for i in range(QUOTA - BURST - 1))
rats = []
for i in range(BURST):
    parent = Client.objects.create(registration_id=f"reg_parent{i}", idp=idp, name=f"parent{i}", owner=parent_owner,
                                   state="active", scopes=["tickets:read"], expires_at=timezone.now() + timedelta(hours=1))
    rats.append(f"rrat_sqlite_parent_{i}")
    RegistrationRequest.objects.create(public_id=parent.registration_id, state="approved", via="token",
                                       owner=parent_owner, client=parent, idp=idp,
                                       registration_access_token_hash=hash_token(rats[-1]))
connection.close()


def burst(bearers):
    barrier = threading.Barrier(len(bearers))
    answers = []

    def register(i, bearer):
        http = HttpClient(raise_request_exception=False)
        body = json.dumps({"client_name": f"agent{i}", "purpose": "sqlite race", "scope": "tickets:read",
                           "jwks": jwks, "requested_ttl": 3600, "internal_only": True})
        barrier.wait()
        try:
            response = http.post("/oauth2/register", body, content_type="application/json",
                                 HTTP_AUTHORIZATION="Bearer " + bearer, REMOTE_ADDR=f"127.0.0.{i + 1}")
            answers.append([response.status_code, response.json().get("error_description", "")])
        except Exception as exc:
            answers.append([0, repr(exc)])
        finally:
            connection.close()

    threads = [threading.Thread(target=register, args=(i, b)) for i, b in enumerate(bearers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def live(who):
    return Client.objects.filter(owner=who, state__in=["provisioning", "active", "suspended"]).count()


# This race is about the quota: every winner may wait inline (the bulkhead would answer 202 beyond K waiters).
from inventory.outbox import deliver
from portal.circuit import Bulkhead
deliver.INLINE_BULKHEAD = Bulkhead(64)

tokens = burst([plain] * BURST)
spawns = burst(rats)
token.refresh_from_db()
print(json.dumps({"answers": tokens, "live": live(owner), "uses": token.uses,
                  "spawns": spawns, "spawn_live": live(parent_owner)}))
"""


def test_the_owner_quota_holds_under_concurrent_registrations_on_sqlite(migrated, tmp_path):
    """Embedded mode gives the same answers as PostgreSQL: its write transactions begin IMMEDIATE, so the owner's
    recount inside the one that creates the client is serialised. 16 threads race for an owner's last 5 places
    with one token, then 16 parents of another owner spawn a child each for its last place (that transaction's
    first statement is the count: begun DEFERRED, the losers would fail on "database is locked")."""
    out = _run_script(RACE_SCRIPT, migrated, tmp_path)

    statuses = sorted(status for status, _ in out["answers"])
    assert statuses == [201] * 5 + [400] * 11, out["answers"]
    assert all(
        text.endswith("the owner already has 50 live clients; the limit is 50")
        for status, text in out["answers"]
        if status == 400
    ), out["answers"]
    assert out["live"] == 50
    assert out["uses"] == 5  # the refused eleven consumed nothing
    assert sorted(status for status, _ in out["spawns"]) == [201] + [400] * 15, out["spawns"]
    assert out["spawn_live"] == 50
