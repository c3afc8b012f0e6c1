"""The approvals app's figures for ``/metrics`` (registered in ``ApprovalsConfig.ready``).

* ``registrar_registrations_total{channel, outcome}`` — a counter, incremented by the RFC 7591 endpoint as it
  answers (``approvals.oauth2.views``): ``channel`` is how the agent proved itself (``token``,
  ``software_statement``, ``spawn``, or ``unknown`` before a credential is known) and ``outcome`` what it got:
  ``created`` (201), ``pending`` (202, waiting for review), ``provisioning`` (202, approved, the IdP still
  busy), ``refused`` (400 by policy), ``invalid`` (400/413 before policy), ``unauthorized`` (401) or
  ``rate_limited`` (429).
* The review queue, read at scrape time: pending requests by risk tier, and the age of the oldest one.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Min
from prometheus_client import Counter

from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from portal.metrics import gauge

REGISTRATIONS = Counter(
    "registrar_registrations",
    "Answers of the RFC 7591 registration endpoint, by channel and outcome.",
    ["channel", "outcome"],
)
UNKNOWN_CHANNEL = "unknown"


def registration_counted(*, channel: str, outcome: str) -> None:
    REGISTRATIONS.labels(channel or UNKNOWN_CHANNEL, outcome).inc()


def collect_review_queue(now) -> Iterable:
    pending = RegistrationRequest.objects.filter(state=RequestState.PENDING)
    by_tier = dict(pending.order_by().values_list("risk_tier").annotate(n=Count("pk")))
    depth = gauge(
        "registrar_review_queue_depth", "Registration requests waiting for approvers, by risk tier.", labels=["tier"]
    )
    for tier in ("low", "medium", "high"):
        depth.add_metric([tier], by_tier.pop(tier, 0))
    for tier, count in sorted(by_tier.items()):
        depth.add_metric([tier or "unknown"], count)
    yield depth
    oldest = pending.aggregate(oldest=Min("created_at"))["oldest"]
    yield gauge(
        "registrar_review_queue_oldest_age_seconds",
        "Age of the oldest request waiting for approvers (0 when the queue is empty).",
        max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    )


def register() -> None:
    from portal.metrics import register_collector

    register_collector("review_queue", collect_review_queue)
