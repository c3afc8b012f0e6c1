"""Fixtures shared by the whole suite (app-specific ones live in each folder's conftest.py)."""

from __future__ import annotations

import shutil

import pytest
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from inventory.choices import ScopeCategory, Sensitivity
from tests.factories import IdPFactory, ScopeFactory, TeamFactory, UserFactory
from tests.idp_server import IdPProcess

# Property tests judge behaviour, not speed: on a loaded 2-core machine drawing inputs through the ORM can take
# longer than Hypothesis's speed health check and per-example deadline allow, which says nothing about the code.
hypothesis_settings.register_profile(
    "registrar", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
hypothesis_settings.load_profile("registrar")

CATALOGUE = [
    ("tickets:read", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("docs:read", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("metrics:read", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("calendar:read", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("tickets:write", Sensitivity.MEDIUM, ScopeCategory.INTERNAL_TOOL),
    ("crm:read", Sensitivity.MEDIUM, ScopeCategory.SAAS_API),
    ("repo:write", Sensitivity.HIGH, ScopeCategory.SOURCE_CONTROL),
    ("db:prod:read", Sensitivity.HIGH, ScopeCategory.PRODUCTION_DATA),
]


@pytest.fixture(autouse=True)
def log_witness_dir(tmp_path, settings):
    """Each test's audit log checkpoints go to its own witness directory."""
    settings.REGISTRAR_LOG_WITNESS = [str(tmp_path / "witness")]
    return tmp_path / "witness"


@pytest.fixture(autouse=True)
def _fresh_inline_circuit():
    """The inline wait's per-IdP circuit lives in the process: no test inherits another's slow or failing IdP."""
    from inventory.outbox.deliver import INLINE_CIRCUIT

    INLINE_CIRCUIT.reset()
    yield
    INLINE_CIRCUIT.reset()


@pytest.fixture
def catalogue(db):
    return {name: ScopeFactory(name=name, sensitivity=s, category=c) for name, s, c in CATALOGUE}


@pytest.fixture
def idp(db):
    return IdPFactory(name="test-dry-run", is_default=True)


@pytest.fixture
def team(db):
    return TeamFactory(name="Platform", slug="platform")


@pytest.fixture
def owner(db):
    return UserFactory(username="olivia", roles=["owner"])


@pytest.fixture
def approver(db):
    return UserFactory(username="bob", roles=["approver"])


@pytest.fixture
def approver2(db):
    return UserFactory(username="carol", roles=["approver"])


@pytest.fixture
def security_user(db):
    return UserFactory(username="ciso", roles=["security"])


@pytest.fixture
def admin_user(db):
    return UserFactory(username="root-admin", roles=["admin"], is_staff=True, is_superuser=True)


@pytest.fixture(scope="session")
def oidc_idp():
    """The real OpenID provider (tests/idp/server.mjs) on loopback, one per test session.

    Node.js is a test requirement (make test installs the IdP's packages); a missing node is a
    failure, not a skip, so a green run always means the real IdP was exercised.
    """
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the real-IdP tests need it (apt-get install nodejs)")
    with IdPProcess() as process:
        yield process


def _xdist_groups_for_pytest_9(config, items) -> None:
    """``--dist loadgroup`` on pytest 9.2: pytest-xdist 3.8.0 marks a test's group by appending ``@group`` to the
    legacy ``item._nodeid``, which pytest 9.2's structured node ids no longer read, so every ``xdist_group`` was
    ignored and the race and fault suites' tests spread over both workers, each starting its own server
    (pytest-dev/pytest-xdist#1386; the fix, #1388, is not released). Until it is: the same suffix on the
    structured id, in the workers, where xdist reads it."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        )
        node_id = getattr(item, "_id", None)
        suffix = "@" + "_".join(names)
        if names and node_id is not None and hasattr(node_id, "parse") and not item.nodeid.endswith(suffix):
            item._id = type(node_id).parse(item.nodeid + suffix)


def pytest_collection_modifyitems(config, items):
    """On SQLite (``REGISTRAR_TEST_DATABASE=sqlite``, the embedded database) tests marked ``postgres_only`` are
    deselected, and reported as such: they test PostgreSQL itself, not a path SQLite shares."""
    _xdist_groups_for_pytest_9(config, items)
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("postgres_only") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def _sqlite_flush_drops_the_log_triggers():
    """SQLite: emptying the database between transactional tests (Django's flush) deletes rows, which the audit
    log's append-only triggers refuse; PostgreSQL's flush truncates, which they do not see. So on SQLite the
    flush drops those triggers and creates them again after the deletes, in its one transaction."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        yield
        return
    from django.db.backends.sqlite3.operations import DatabaseOperations

    from tests.dbtamper import saved_triggers

    original = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        if not statements:
            return statements
        with self.connection.cursor() as cursor:
            saved = saved_triggers(cursor)
        return [f'DROP TRIGGER "{name}"' for name, _ in saved] + statements + [sql for _, sql in saved]

    DatabaseOperations.sql_flush = sql_flush
    yield
    DatabaseOperations.sql_flush = original
