"""PostgreSQL restarted under load (issue 23, item 3): agents and people get the documented 503s and nothing else,
/healthz stays 200 and /readyz turns 503 while it is down, service resumes after the restart, and nothing an
agent was told about is missing nor anything written that nobody was told about."""

from __future__ import annotations

import json
import time

from tests.faults.conftest import FAULT
from tests.faults.harness import API_WORKERS, PAGES_WORKERS
from tests.races.harness import Call, bearer
from tests.races.support import body

pytestmark = FAULT

OK_AGENT = {201, 202}
OK_PERSON = {200}


def test_postgres_restart_under_load(fault_server, world):
    from inventory.models import Client

    owner = world.owner()
    _, rat = world.token(owner, max_uses=100_000)
    approver = world.person(world.user("approver"))

    def register(name: str) -> Call:
        return Call("POST", "/oauth2/register", json=body(name), headers=bearer(rat))

    page = Call("GET", "/approvals/", cookies={"sessionid": approver.session_key})
    probes: list[tuple[str, int]] = []
    mark = fault_server.log_mark()
    from tests.faults.harness import Load

    with Load(fault_server, agent_call=register, person_call=page, agents=4, people=2) as load:
        load.wait_for(lambda o: o.kind == "agent" and o.status in OK_AGENT, after=0, timeout=60)
        time.sleep(1.0)
        fault_server.postgres.stop("fast")
        down_at = time.monotonic()
        load.wait_for(lambda o: o.status == 503, after=down_at, timeout=30)
        probes += [("healthz", fault_server.probe("/healthz")), ("readyz", fault_server.probe("/readyz"))]
        time.sleep(max(0.0, 5.0 - (time.monotonic() - down_at)))
        probes += [("healthz", fault_server.probe("/healthz")), ("readyz", fault_server.probe("/readyz"))]
        fault_server.postgres.start()
        up_at = time.monotonic()
        load.wait_for(lambda o: o.kind == "agent" and o.status in OK_AGENT, after=up_at, timeout=30)
        load.wait_for(lambda o: o.kind == "person" and o.status in OK_PERSON, after=up_at, timeout=30)
        time.sleep(1.0)

    outcomes = load.outcomes
    log = fault_server.log_since(mark)
    # Only the documented answers: success, or the 503 with Retry-After; never a 500 nor a dropped connection.
    unexpected = [o for o in outcomes if o.status not in (OK_AGENT | OK_PERSON | {503})]
    assert not unexpected, f"{len(unexpected)} unexpected answers, e.g. {unexpected[:3]}; log: {log[-3000:]}"
    refused = [o for o in outcomes if o.status == 503]
    assert refused, "the outage was never seen: the test did not test anything"
    for outcome in refused:
        assert outcome.retry_after.isdigit(), outcome
        if outcome.kind == "agent":
            assert outcome.content_type == "application/json", outcome
            assert json.loads(outcome.text)["error"] == "temporarily_unavailable"
        else:
            assert "Registrar is briefly unavailable" in outcome.text, outcome
    # Liveness never depends on the database; readiness does.
    assert [status for what, status in probes if what == "healthz"] == [200, 200]
    assert [status for what, status in probes if what == "readyz"] == [503, 503]
    assert fault_server.probe("/readyz") == 200
    # One warning per process per outage, not a stack trace per request.
    assert "Traceback" not in log, log[-3000:]
    # one per web worker (+ one re-detection)
    assert 1 <= log.count("event=database_unavailable") <= API_WORKERS + PAGES_WORKERS + 1, log[-3000:]
    # Nothing half-written: every agent told 201/202 has its client, and no client exists that nobody was told of.
    from django.db import connection

    connection.close()  # this process's connection died with the restart too
    told = {o.name for o in outcomes if o.kind == "agent" and o.status in OK_AGENT}
    written = set(Client.objects.filter(name__startswith=load.prefix).values_list("name", flat=True))
    assert told <= written, f"told but missing: {sorted(told - written)[:5]}"
    unanswered = written - told
    # A registration committed just as its connection was cut may have lost only its answer; none else may exist.
    assert len(unanswered) <= 4, sorted(unanswered)
