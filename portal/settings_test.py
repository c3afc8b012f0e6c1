"""Test overrides only: everything else comes from portal.settings and the environment.

The suite runs on PostgreSQL (``DATABASE_URL``, by default the local server) and, with
``REGISTRAR_TEST_DATABASE=sqlite``, on the embedded SQLite database exactly as ``make run`` configures it (no
``DATABASE_URL``; pytest-django makes an in-memory test database of it). Tests that need PostgreSQL itself
carry the ``postgres_only`` marker (tests/conftest.py) and are not collected on SQLite.
"""

import os

TEST_DATABASE = os.environ.get("REGISTRAR_TEST_DATABASE", "postgresql")
if TEST_DATABASE == "sqlite":
    os.environ.pop("DATABASE_URL", None)  # embedded mode: SQLite under REGISTRAR_DATA_DIR
elif TEST_DATABASE == "postgresql":
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/registrar")
else:
    raise RuntimeError(f"REGISTRAR_TEST_DATABASE must be postgresql or sqlite, got {TEST_DATABASE!r}")
os.environ.setdefault("DEBUG", "true")
# Demo-grade keys are fine for tests (PostgreSQL all the same); production refuses them (portal.settings).
os.environ.setdefault("REGISTRAR_EMBEDDED", "1")

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; real hashers in production
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = False
REGISTRAR_DEMO_MODE = False
DEMO_MODE = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A fixed key for the audit log (tests only; its private half is public here). The witness directory is
# set per test (tests/conftest.py), and nothing nudges a worker: tests run the sequencer themselves.
REGISTRAR_LOG_SIGNING_KEY = "PRIVATE+KEY+registrar.test/audit-log+23489aee+AbLUkPGT8NXxl453Z+fncnV6KVajDSg9Yz0HcvL1aSS4"
REGISTRAR_LOG_SIGNING_KEY_FILE = None
REGISTRAR_LOG_GENERATE_KEY = False
REGISTRAR_LOG_NUDGE = False
# Most tests sign privileged people in with force_login, which passes no second factor; the MFA rule itself is
# tested with it on (tests/portal/test_mfa.py, tests/e2e/test_mfa_browser.py), and production keeps it on.
REGISTRAR_MFA_REQUIRED = False
if TEST_DATABASE == "sqlite":
    # A file, as make run's (WAL, busy timeout, IMMEDIATE transactions), not a shared in-memory database whose
    # table locks fail at once: tests with several connections (threads, a live server) wait as the demo's do.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_registrar.sqlite3")}  # noqa: F405
if "replica" in DATABASES:  # noqa: F405
    # With DATABASE_REPLICA_URL set, the suite's replica alias reads the test database through a connection of
    # its own; the standby tests (tests/portal/test_replica_standby.py) start a real one.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}  # noqa: F405
