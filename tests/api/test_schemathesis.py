"""Schemathesis over the whole management API: generated requests to every operation in ``/api/schema/``, as a
person holding every role (and an API token with every right), must never get a 5xx, and every response must
match what the schema says of it (content type, body).

The schema is loaded from the Django app itself (WSGI, in this process, against the test database); examples
are bounded and derandomized so the run is the same every time and short.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from inventory.choices import ClientState
from portal.crypto import hash_token
from portal.models import ApiToken, TokenRight
from tests.factories import ClientFactory, RequestFactory, UserFactory

TOKEN = "rapi_schemathesis_every_right"
EXAMPLES_PER_OPERATION = 15

# The fuzzing phase alone (EXAMPLES_PER_OPERATION each), with a fixed seed: the coverage phase's boundary cases
# for every parameter of every operation would take minutes on two shared cores.
CONFIG = SchemathesisConfig.from_dict({"seed": 20261204, "phases": {"coverage": {"enabled": False}}})
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture
def wsgi_app(db):
    """Requests run in this thread, inside the test's transaction: like Django's test client, the handler must
    not close the connection between requests (which would end that transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def every_role(wsgi_app, catalogue, idp, team):
    everyone = UserFactory(username="every-role", roles=["owner", "approver", "security", "admin"])
    ApiToken.objects.create(
        user=everyone, name="schemathesis", prefix=TOKEN[:12], token_hash=hash_token(TOKEN), rights=TokenRight.values
    )
    # Something to find: a live client of theirs, one ended, a pending request.
    ClientFactory(idp=idp, owner=everyone, team=team, name="fuzzed-live")
    ClientFactory(idp=idp, owner=everyone, name="fuzzed-retired", state=ClientState.RETIRED)
    RequestFactory(owner=everyone, team=team, idp=idp)
    return everyone


def _load_schema():
    """The schema ``/api/schema/`` serves (the same generator), calling the app in this process."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(json.dumps(generated, cls=DjangoJSONEncoder)), config=CONFIG)
    loaded.app = WSGIHandler()
    return loaded


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_without_5xx_and_as_documented(case, every_role):
    case.call_and_validate(headers={"Authorization": f"Token {TOKEN}"}, checks=CHECKS)
