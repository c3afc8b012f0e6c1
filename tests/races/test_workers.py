"""Only-once rules of the background work, raced by queueing 16 copies of a task at once on the Celery worker
(four processes): what two beat instances, a retried message or an impatient admin cause in production.

Every run of the task must find the work done by the others: one digest per person and day, each expired
client expired once, each outbox entry delivered once (one client at the IdP), one approver mail per interval.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import timedelta

from django.utils import timezone

from inventory.choices import ClientState, OutboxOperation, OutboxStatus
from inventory.models import Client, OutboxEntry, OwnerDigest
from inventory.services import client_create
from portal.audit import Actor
from tests.provisioning import markers_at_idp
from tests.races.harness import RaceServer, wait_until
from tests.races.support import AGENT_JWKS, RACE, actions

pytestmark = RACE

COPIES = 16


def same_day(margin: float = 60.0) -> None:
    """Digests are one per person and UTC day: start well inside a day, so every run of a burst counts in it."""
    left = 86400 - time.time() % 86400
    if left < margin:
        time.sleep(left + 1)


def run_at_once(server: RaceServer, task: str, *, args=()) -> None:
    """Queue COPIES of ``task`` together and wait until the worker has finished every one of them."""
    done = re.compile(rf"Task {re.escape(task)}\[[0-9a-f-]+\] (succeeded|raised)")

    def finished() -> int:
        return len(done.findall(server.celery.log_path.read_text(errors="replace")))

    before = finished()
    server.send_tasks(task, COPIES, args=args)
    wait_until(lambda: finished() >= before + COPIES, what=f"{COPIES} runs of {task}", timeout=120)
    outcomes = Counter(m.group(1) for m in done.finditer(server.celery.log_path.read_text(errors="replace")))
    assert not outcomes["raised"], server.celery.log_tail()


def test_one_expiry_digest_per_owner_and_day(race_server, world):
    owner = world.owner()
    # Activated a month ago, ending in 6 h: past its reminder moment (a day before, the later of that and 20 % left).
    world.clients(
        owner, 3, expires_at=timezone.now() + timedelta(hours=6), activated_at=timezone.now() - timedelta(days=30)
    )
    same_day()

    run_at_once(race_server, "inventory.tasks.notify_expiring")

    assert OwnerDigest.objects.filter(user=owner, kind="expiry").count() == 1
    digests = [m for m in race_server.mails() if "client(s) expire soon" in m]
    recipients = Counter(re.search(r"^To: (.+)$", m, re.MULTILINE).group(1) for m in digests)
    assert recipients[owner.email] == 1, recipients
    assert max(recipients.values()) == 1, recipients  # nobody else got two either


def test_each_expired_client_is_expired_once(race_server, world):
    owner = world.owner()
    due = world.clients(owner, 40, expires_at=timezone.now() - timedelta(minutes=5))
    ids = [c.registration_id for c in due]

    run_at_once(race_server, "inventory.tasks.sweep_expired")

    assert set(Client.objects.filter(pk__in=[c.pk for c in due]).values_list("state", flat=True)) == {
        ClientState.EXPIRED
    }
    assert actions(action="client.expired", object_id__in=ids) == Counter({"client.expired": len(due)})
    disables = Counter(
        OutboxEntry.objects.filter(client__in=due, operation=OutboxOperation.DISABLE).values_list(
            "client_id", flat=True
        )
    )
    assert set(disables.values()) == {1} and len(disables) == len(due)


def test_each_outbox_entry_is_delivered_once(race_server, world):
    """20 clients waiting for their CREATE; 16 batch deliveries of all of them at once: one client each at the IdP."""
    owner = world.owner()
    clients = [
        client_create(
            actor=Actor.system("race"),
            idp=race_server.idp,
            name=world.name("queued"),
            owner=owner,
            purpose="delivered by a worker",
            scopes=["tickets:read"],
            internal_only=True,
            jwks=AGENT_JWKS,
            expires_at=timezone.now() + timedelta(hours=2),
        )
        for _ in range(20)
    ]  # this process has no broker (memory://): nothing is delivered until the tasks below

    run_at_once(race_server, "inventory.tasks.deliver_outbox_batch", args=[[c.pk for c in clients]])

    wait_until(
        lambda: not OutboxEntry.objects.filter(client__in=clients, status=OutboxStatus.PENDING).exists(),
        what="the batch deliveries to finish",
    )
    assert set(OutboxEntry.objects.filter(client__in=clients).values_list("status", flat=True)) == {OutboxStatus.DONE}
    markers = markers_at_idp(race_server.idp_process)
    assert [markers[c.registration_id] for c in clients] == [1] * len(clients)
    ids = [c.registration_id for c in clients]
    assert actions(action="client.active", object_id__in=ids) == Counter({"client.active": len(clients)})


def test_one_approver_mail_per_interval(race_server, world):
    approver = world.user("approver")
    world.pending(world.owner())

    run_at_once(race_server, "approvals.tasks.notify_approvers")

    waiting = [m for m in race_server.mails() if "awaiting your decision" in m]
    recipients = Counter(re.search(r"^To: (.+)$", m, re.MULTILINE).group(1) for m in waiting)
    assert recipients[approver.email] == 1, recipients
    assert max(recipients.values()) == 1, recipients


def test_each_unused_client_is_flagged_once_by_the_inactivity_rule(race_server, world):
    """The stale sweep is gone: the inactivity rule flags unused clients (and keeps ``stale_at``), once."""
    from inventory.models import ComplianceIssue

    owner = world.owner()
    long_ago = timezone.now() - timedelta(days=120)
    unused = world.clients(owner, 30, last_used_at=long_ago, activated_at=long_ago)
    Client.objects.filter(pk__in=[c.pk for c in unused]).update(created_at=long_ago)

    run_at_once(race_server, "inventory.tasks.lifecycle_policies")

    ids = [c.registration_id for c in unused]
    flags = actions(action="client.compliance_flag", object_id__in=ids, after__rule="inactivity")
    assert flags == Counter({"client.compliance_flag": len(unused)})
    assert ComplianceIssue.objects.filter(rule="inactivity", client__in=unused).count() == len(unused)
    assert Client.objects.filter(pk__in=[c.pk for c in unused], stale_at__isnull=False).count() == len(unused)


def test_each_client_past_its_grace_is_acted_on_once(race_server, world):
    """An enforcing policy, 16 periodic passes at once on four worker processes: the flag passes serialise, the
    enforcement batches lock issues and clients with SKIP LOCKED, so each overdue client is suspended once —
    one event, one hold, one IdP disable — whichever process took its batch."""
    from inventory.lifecycle_policies import lifecycle_policy_publish
    from inventory.models import ComplianceIssue, Team

    team = Team.objects.create(name=world.name("Race team"), slug=world.name("race-team"))
    scope = {"teams": [team.slug]}  # the other races' clients stay out of this policy
    owner = world.owner()
    long_ago = timezone.now() - timedelta(days=60)
    overdue = world.clients(owner, 40, team=team, risk_tier="high", activated_at=long_ago)
    Client.objects.filter(pk__in=[c.pk for c in overdue]).update(created_at=long_ago)
    admin = Actor.system("race")
    lifecycle_policy_publish(
        actor=admin,
        rules={
            "attestation": {"action": "suspend", "grace_days": 0, "scope": scope},
            "inactivity": {"enabled": False},
            "sponsors": {"enabled": False},
        },
        monitor_only=False,
    )
    try:
        run_at_once(race_server, "inventory.tasks.lifecycle_policies")
    finally:
        lifecycle_policy_publish(actor=admin, rules={}, monitor_only=True, note="race over: defaults, monitor only")

    ids = [c.registration_id for c in overdue]
    assert actions(action="client.policy_suspend", object_id__in=ids) == Counter({"client.policy_suspend": len(ids)})
    assert actions(action="client.compliance_flag", object_id__in=ids) == Counter({"client.compliance_flag": len(ids)})
    pks = [c.pk for c in overdue]
    held = Client.objects.filter(pk__in=pks, state=ClientState.SUSPENDED, hold_kind="policy")
    assert held.count() == len(pks)
    disables = OutboxEntry.objects.filter(client_id__in=pks, operation=OutboxOperation.DISABLE)
    assert Counter(disables.values_list("client_id", flat=True)) == Counter(dict.fromkeys(pks, 1))
    issues = ComplianceIssue.objects.filter(client_id__in=pks)
    assert issues.count() == len(pks) and not issues.filter(acted_at__isnull=True).exists()


def test_each_forgotten_request_lapses_once(race_server, world):
    from approvals.models import RegistrationRequest

    owner = world.owner()
    forgotten = [world.pending(owner) for _ in range(20)]
    RegistrationRequest.objects.filter(pk__in=[r.pk for r in forgotten]).update(
        created_at=timezone.now() - timedelta(days=30)
    )

    run_at_once(race_server, "approvals.tasks.sweep_lapsed")

    assert set(
        RegistrationRequest.objects.filter(pk__in=[r.pk for r in forgotten]).values_list("state", flat=True)
    ) == {"lapsed"}
    ids = [r.public_id for r in forgotten]
    assert actions(action="request.lapse", object_id__in=ids) == Counter({"request.lapse": len(forgotten)})


def test_the_audit_chain_never_forked(race_server):
    """Last in the suite: every event appended by every burst above, by every process, forms one chain."""
    from portal.audit import verify_chain
    from portal.models import AuditEvent
    from portal.tlog.sequencer import log_seal_through

    # Events are appended without a lock and sealed into the log by the worker a moment later: wait until the
    # last one is sealed (under load the worker was still two events behind when this test first ran).
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    assert last is not None and log_seal_through(last, timeout=60)
    checked, broken = verify_chain()
    assert broken is None, broken
    assert checked == AuditEvent.objects.count()
