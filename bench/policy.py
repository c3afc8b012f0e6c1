"""Benchmark the policy engine: microseconds per ``evaluate`` call for a typical registration.

Run from the repository root: ``python bench/policy.py``. Prints µs/call (best of several repeats) and a
ratio against a baseline measured in the same run -- ``json.loads`` of the registration body, which the API
does anyway -- because absolute times on a shared machine are noise. Appends one line to bench/RESULTS.md.
Budget: <= 50 µs per call.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from approvals.policy import PolicyConfig, RegistrationContext, ScopeInfo, evaluate

BUDGET_US = 50.0
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "One line per run, appended by the scripts in bench/. Ratios compare against a baseline measured in the\n"
    "same run; absolute times depend on the machine.\n\n"
)

# A catalogue of realistic size, so lookups are not flattered by a tiny dict.
CATALOGUE = {
    f"svc{i}:{verb}": ScopeInfo(f"svc{i}:{verb}", ("low", "medium", "high")[i % 3], "internal_tool")
    for i in range(200)
    for verb in ("read", "write")
}
SCOPES = ("svc0:read", "svc3:read", "svc6:write")  # all low sensitivity
BODY = json.dumps(
    {
        "purpose": "Summarise support tickets nightly",
        "redirect_uris": ["https://agent.example.com/cb", "http://127.0.0.1:8765/cb"],
        "scope": " ".join(SCOPES),
        "token_endpoint_auth_method": "private_key_jwt",
        "requested_ttl": 7200,
        "internal_only": True,
        "application_type": "native",
    }
)


def typical_context() -> RegistrationContext:
    """A registration via an initial access token with a scope and TTL ceiling: the common path."""
    return RegistrationContext(
        requested_scopes=SCOPES,
        catalogue=CATALOGUE,
        requested_ttl=7200,
        redirect_uris=("https://agent.example.com/cb", "http://127.0.0.1:8765/cb"),
        application_type="native",
        token_endpoint_auth_method="private_key_jwt",
        internal_only=True,
        owner_active=True,
        owner_live_clients=12,
        via="token",
        ceiling_scopes=frozenset(SCOPES) | {"svc9:read"},
        ceiling_ttl=3600,
    )


def best_us(stmt, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    config = PolicyConfig(version=1)
    ctx = typical_context()
    verdict = evaluate(ctx, config)
    assert verdict.outcome == "auto_approve", verdict  # the benchmark must exercise the intended path

    number = 20000
    evaluate_us = best_us(lambda: evaluate(ctx, config), number)
    with_context_us = best_us(lambda: evaluate(typical_context(), config), number)
    # urlsplit caches recent URIs; real clients bring new ones, so also measure with every URI unseen.
    fresh = iter(
        [
            dataclasses.replace(
                ctx, redirect_uris=(f"https://agent{i}.example.com/cb", f"http://127.0.0.1:{i % 60000}/cb")
            )
            for i in range(number * 7)
        ]
    )
    fresh_uris_us = best_us(lambda: evaluate(next(fresh), config), number)
    baseline_us = best_us(lambda: json.loads(BODY), number)
    ratio = evaluate_us / baseline_us
    verdict_line = "OK" if max(evaluate_us, fresh_uris_us) <= BUDGET_US else "OVER BUDGET"

    print(f"evaluate():              {evaluate_us:7.2f} µs/call  (budget {BUDGET_US:.0f} µs: {verdict_line})")
    print(f"context + evaluate():    {with_context_us:7.2f} µs/call")
    print(f"evaluate(), unseen URIs: {fresh_uris_us:7.2f} µs/call")
    print(f"baseline json.loads():   {baseline_us:7.2f} µs/call  -> evaluate = {ratio:.1f}x baseline")

    if not RESULTS.exists():
        RESULTS.write_text(HEADER, encoding="utf-8")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(
            f"- {stamp} policy.evaluate: {evaluate_us:.2f} µs/call, with context {with_context_us:.2f} µs, "
            f"unseen redirect URIs {fresh_uris_us:.2f} µs, "
            f"{ratio:.1f}x json.loads baseline ({baseline_us:.2f} µs); budget {BUDGET_US:.0f} µs {verdict_line}; "
            f"Python {platform.python_version()}\n"
        )
    return 0 if max(evaluate_us, fresh_uris_us) <= BUDGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
