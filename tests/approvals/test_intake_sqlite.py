"""The demo's database (SQLite, ``make run``) takes registrations through the same hand-written hot path
(portal.rawsql, the audit append) as PostgreSQL: run in a subprocess on a fresh SQLite file."""

from __future__ import annotations

import json
import os
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


def test_registration_on_sqlite_writes_rows_and_a_valid_log(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "true", "REGISTRAR_DATA_DIR": str(tmp_path),
            "PYTHONPATH": str(ROOT), "LOG_LEVEL": "ERROR"}  # fmt: skip
    run = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 120}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], **run)
    assert migrate.returncode == 0, migrate.stderr
    result = subprocess.run([sys.executable, "-c", SCRIPT], **run)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])

    assert out["status"] == {"tickets:read": 201, "tickets:write": 202, "nope:x": 400}
    assert out["uses"] == 2  # accepted + pending consume a use, the refusal does not
    assert out["requests"] == ["approved", "pending", "refused"] and out["owners"] == ["demo-owner"]
    assert {"client.create", "registration.accepted", "client.active"} <= set(out["actions"])
    assert out["actions"][-2:] == ["registration.pending", "registration.refused"]
    assert out["sealed"] == len(out["actions"])
    assert out["chain"] == [len(out["actions"]), None]
