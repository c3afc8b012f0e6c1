"""Benchmark the review queue page with 10,000 pending requests in PostgreSQL.

Run from the repository root (PostgreSQL on localhost):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/registrar_queue python bench/approvals_queue.py

It creates (and afterwards drops) a throw-away ``test_<name>`` database, bulk-loads 10,000 pending
requests, renders ``/approvals/`` for an approver through Django's test client (the full stack:
middleware, session, selectors, templates) and prints the median server time, the SQL query count,
and a ratio against a raw-SQL baseline measured in the same run: the page's two essential queries
(count + first page ordered by tier then age) issued by hand on the same connection.
Budget: <= 150 ms per render. Appends one line to bench/RESULTS.md.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the stdlib ``queue`` module: drop bench/ from the import path before anything
# imports ``queue`` (concurrent.futures does, via Django), then put the repository root first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.modules.pop("queue", None)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/registrar_queue")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client as HttpClient  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

N_PENDING = 10_000
REPEATS = 25
BUDGET_MS = 150.0
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "One line per run, appended by the scripts in bench/. Ratios compare against a baseline measured in the\n"
    "same run; absolute times depend on the machine.\n\n"
)

RAW_COUNT = """
SELECT COUNT(*) FROM approvals_registrationrequest r
WHERE r.state = 'pending' AND r.owner_id <> %s
  AND NOT EXISTS (SELECT 1 FROM approvals_decision d WHERE d.request_id = r.id AND d.approver_id = %s)
"""
RAW_PAGE = """
SELECT r.*, u.username, t.name,
       (SELECT COUNT(*) FROM approvals_decision d WHERE d.request_id = r.id AND d.kind = 'approve') AS approvals
FROM approvals_registrationrequest r
LEFT JOIN portal_user u ON u.id = r.owner_id
LEFT JOIN inventory_team t ON t.id = r.team_id
WHERE r.state = 'pending' AND r.owner_id <> %s
  AND NOT EXISTS (SELECT 1 FROM approvals_decision d WHERE d.request_id = r.id AND d.approver_id = %s)
ORDER BY CASE WHEN r.risk_tier = 'high' THEN 2 WHEN r.risk_tier = 'medium' THEN 1 ELSE 0 END DESC, r.created_at, r.id
LIMIT 25
"""


def load(n: int):
    from approvals.models import RegistrationRequest
    from inventory.choices import RiskTier, ScopeCategory, Sensitivity
    from inventory.models import IdPConnection, ScopeDefinition, Team
    from portal.models import User

    for name, sens in [
        ("tickets:read", Sensitivity.LOW),
        ("crm:read", Sensitivity.MEDIUM),
        ("repo:write", Sensitivity.HIGH),
    ]:
        ScopeDefinition.objects.get_or_create(
            name=name, defaults={"sensitivity": sens, "category": ScopeCategory.OTHER}
        )
    idp, _ = IdPConnection.objects.get_or_create(name="bench-dry-run", defaults={"kind": "dry-run", "is_default": True})
    teams = [Team.objects.get_or_create(name=f"Team {i}", slug=f"team-{i}")[0] for i in range(20)]
    owners = [User.objects.create(username=f"owner{i}", email=f"owner{i}@example.com") for i in range(200)]
    approver = User.objects.create(username="bench-approver", email="a@example.com")
    approver.groups.add(Group.objects.get_or_create(name="approver")[0])
    now = timezone.now()
    tiers = [RiskTier.HIGH, RiskTier.MEDIUM]
    rows = [
        RegistrationRequest(
            public_id=f"reg_bench{i:07d}",
            via="token",
            client_name=f"agent-{i}",
            software_id=f"com.example.{i % 500}",
            purpose="Summarise tickets and open pull requests for the platform team",
            owner=owners[i % len(owners)],
            team=teams[i % len(teams)],
            idp=idp,
            requested_scopes=["tickets:read", "repo:write", "crm:read"],
            requested_ttl=3600,
            risk_tier=tiers[i % 2],
            approvals_needed=2 - i % 2,
            policy_version=1,
            outcome="review",
            metadata={"redirect_uris": [f"https://a{i}.example/cb"]},
            reasons=[
                {"code": "high_sensitivity_scope", "message": "scope 'repo:write' has high sensitivity"},
                {"code": "not_internal_only", "message": "the client is not internal-only"},
            ],
        )
        for i in range(n)
    ]
    RegistrationRequest.objects.bulk_create(rows, batch_size=2000)
    # Spread ages over the lapse window so the SLA colours and the age ordering are realistic.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE approvals_registrationrequest SET created_at = %s - (id %% 10000) * interval '1 minute'", [now]
        )
        cursor.execute("ANALYZE")
    return approver


def timed(fn, repeats=REPEATS) -> list[float]:
    fn()  # warm caches (templates, query plans)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    setup_test_environment()
    # Our own throw-away database, so a concurrent pytest run on test_<name> is never clobbered.
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = (
        "test_" + settings.DATABASES["default"]["NAME"] + "_bench"
    )
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        approver = load(N_PENDING)
        client = HttpClient()
        client.force_login(approver)

        def render():
            response = client.get("/approvals/")
            assert response.status_code == 200, response.status_code
            return response

        render()
        with CaptureQueriesContext(connection) as ctx:
            body = render().content.decode()
        assert body.count("data-row") == 25, "expected a full first page"
        page_ms = statistics.median(timed(render))

        def raw():
            with connection.cursor() as cursor:
                cursor.execute(RAW_COUNT, [approver.pk, approver.pk])
                cursor.fetchone()
                cursor.execute(RAW_PAGE, [approver.pk, approver.pk])
                cursor.fetchall()

        raw_ms = statistics.median(timed(raw))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    ok = "OK" if page_ms <= BUDGET_MS else "OVER BUDGET"
    line = (
        f"- {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC approvals queue page, {N_PENDING:,} pending "
        f"(PostgreSQL, Django test client): {page_ms:.1f} ms median server time, {len(ctx.captured_queries)} queries, "
        f"{page_ms / raw_ms:.1f}x raw-SQL baseline ({raw_ms:.1f} ms: count + first page); "
        f"budget {BUDGET_MS:.0f} ms {ok}; Python {sys.version.split()[0]}, {settings.DATABASES['default']['ENGINE']}"
    )
    print(line)
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")
    return 0 if page_ms <= BUDGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
