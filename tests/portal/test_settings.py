"""Settings fail fast on malformed environment values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_float, env_int, parse_database_url, parse_redis_url

ROOT = Path(__file__).resolve().parents[2]
TEST_LOG_KEY = "PRIVATE+KEY+registrar.test/audit-log+23489aee+AbLUkPGT8NXxl453Z+fncnV6KVajDSg9Yz0HcvL1aSS4"
TEST_LOG_VERIFIER_KEY = "registrar.test/audit-log+23489aee+AXSUlzg7vliEFEkSv1ltpOE4hvrbzW/P86mqZQOZI9fZ"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgres://u@h:notaport/db", "postgres://u@h:5432/", "nonsense"])
def test_malformed_database_url_is_refused(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)


def test_valid_database_url_parses():
    config = parse_database_url("postgres://postgres@127.0.0.1:5432/registrar")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["HOST"], config["PORT"]) == ("registrar", "127.0.0.1", 5432)


def test_env_helpers_reject_bad_values():
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        env_bool("FLAG", False, environ={"FLAG": "maybe"})
    with pytest.raises(ImproperlyConfigured, match="N must be an integer"):
        env_int("N", 1, environ={"N": "ten"})
    with pytest.raises(ImproperlyConfigured, match="N must be >= 1"):
        env_int("N", 1, minimum=1, environ={"N": "0"})
    with pytest.raises(ImproperlyConfigured, match="T must be a number"):
        env_float("T", 1.0, environ={"T": "soon"})
    with pytest.raises(ImproperlyConfigured, match="finite"):
        env_float("T", 1.0, environ={"T": "nan"})
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        parse_redis_url("http://localhost:6379")


# Everything that decides the settings' shape; the test process has some of these set (settings_test).
_SHAPE = (
    "DATABASE_URL",
    "DEBUG",
    "SECRET_KEY",
    "REDIS",
    "REGISTRAR_EMBEDDED",
    "REGISTRAR_ENCRYPTION_KEY",
    "REGISTRAR_OLD_ENCRYPTION_KEYS",
    "REGISTRAR_DEMO_MODE",
    "REGISTRAR_LOG_",
    "ALLOWED_HOSTS",
)
_SNIPPET = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.EMBEDDED, s.DEBUG, s.DEMO_MODE, s.DATABASES['default']['ENGINE'], s.SECRET_KEY)"
)


def _import_settings(env: dict, snippet: str = "import django; django.setup()") -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_SHAPE)}
    return subprocess.run(
        [sys.executable, "-c", snippet],
        env=clean | {"DJANGO_SETTINGS_MODULE": "portal.settings"} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_module_fails_fast_on_malformed_database_url():
    result = _import_settings({"DATABASE_URL": "postgres://u@h:port/db", "DEBUG": "true"})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DATABASE_URL" in result.stderr


def test_production_requires_secret_and_encryption_key():
    prod = {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/registrar",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "registrar.example.com",
    }
    result = _import_settings(prod)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr
    result = _import_settings(prod | {"SECRET_KEY": "x" * 50})
    assert result.returncode != 0 and "REGISTRAR_ENCRYPTION_KEY" in result.stderr
    result = _import_settings(prod | {"SECRET_KEY": "x" * 50, "REGISTRAR_ENCRYPTION_KEY": "short"})
    assert result.returncode != 0 and "Fernet key" in result.stderr
    keyed = prod | {"SECRET_KEY": "x" * 50, "REGISTRAR_ENCRYPTION_KEY": "5bOBxsI9hZ2CcMZSjTuAL2XDfw3wF5VpDJmX5dlQRqY="}
    result = _import_settings(keyed)
    assert result.returncode != 0 and "REGISTRAR_LOG_SIGNING_KEY" in result.stderr
    result = _import_settings(keyed | {"REGISTRAR_LOG_SIGNING_KEY": "PRIVATE+KEY+x+00000000+AAAA"})
    assert result.returncode != 0 and "audit log key" in result.stderr
    good = keyed | {"REGISTRAR_LOG_SIGNING_KEY": TEST_LOG_KEY}
    result = _import_settings(good)
    assert result.returncode == 0, result.stderr
    # a web server may hold the public key only
    result = _import_settings(keyed | {"REGISTRAR_LOG_VERIFIER_KEY": TEST_LOG_VERIFIER_KEY})
    assert result.returncode == 0, result.stderr


def test_database_connection_settings_come_from_the_environment():
    snippet = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['default']; o = d.get('OPTIONS', {}); "
        "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'], o.get('server_side_binding'), o.get('prepare_threshold'))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", *_SHAPE))}
    base = clean | {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "true",
        "REGISTRAR_EMBEDDED": "1",
        "DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar",
    }

    def run(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", snippet], env=base | env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run() == "60 True True 5"
    assert run(DATABASE_CONN_MAX_AGE="5", DATABASE_CONN_HEALTH_CHECKS="false") == "5 False True 5"
    assert run(DATABASE_PREPARED_STATEMENTS="false") == "60 True None None"  # behind an old PgBouncer


# --- fail closed: embedded mode only when asked for -------------------------------------------------------

EMBEDDED_SECRET_KEY = "registrar-embedded-insecure-key-do-not-use-in-production"
GOOD_SECRET = "k" * 20 + "-production-secret-0123456789"
GOOD_FERNET = "5bOBxsI9hZ2CcMZSjTuAL2XDfw3wF5VpDJmX5dlQRqY="
PROD = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/registrar",
    "ALLOWED_HOSTS": "registrar.example.com",
    "SECRET_KEY": GOOD_SECRET,
    "REGISTRAR_ENCRYPTION_KEY": GOOD_FERNET,
    "REGISTRAR_LOG_SIGNING_KEY": TEST_LOG_KEY,
}


def _derived(secret_key: str) -> str:
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()).decode()


def _refused(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("debug", ["false", "true", None])
def test_no_database_url_without_the_embedded_flag_stops_start_up(tmp_path, debug):
    """Regression: DEBUG=false without DATABASE_URL started embedded, on the public SECRET_KEY, with an
    encryption key derived from it."""
    env = {"ALLOWED_HOSTS": "registrar.example.com", "REGISTRAR_DATA_DIR": str(tmp_path)}
    if debug is not None:
        env["DEBUG"] = debug
    _refused(_import_settings(env, _SNIPPET), "DATABASE_URL must be set", "REGISTRAR_EMBEDDED=1")
    assert not (tmp_path / "registrar.sqlite3").exists()


@pytest.mark.parametrize("debug", ["false", "true"])
def test_secrets_are_required_without_the_embedded_flag_even_with_debug(debug):
    env = PROD | {"DEBUG": debug}
    _refused(
        _import_settings({k: v for k, v in env.items() if k != "SECRET_KEY"}),
        "SECRET_KEY must be set",
        "secrets.token_urlsafe",
    )
    _refused(
        _import_settings({k: v for k, v in env.items() if k != "REGISTRAR_ENCRYPTION_KEY"}),
        "REGISTRAR_ENCRYPTION_KEY must be set",
        "Fernet.generate_key()",
    )
    _refused(_import_settings(env | {"SECRET_KEY": "short"}), "SECRET_KEY must be at least 32 characters")


@pytest.mark.parametrize("secret_key", [EMBEDDED_SECRET_KEY, "django-insecure-" + "x" * 40])
def test_the_known_demo_secret_key_is_refused(secret_key):
    _refused(
        _import_settings(PROD | {"SECRET_KEY": secret_key}),
        "SECRET_KEY is a publicly known demo value",
        "secrets.token_urlsafe",
    )


@pytest.mark.parametrize("derived_from", ["embedded default", "the configured SECRET_KEY"])
def test_an_encryption_key_derived_from_a_secret_key_is_refused(derived_from):
    key = _derived(EMBEDDED_SECRET_KEY if derived_from == "embedded default" else GOOD_SECRET)
    _refused(
        _import_settings(PROD | {"REGISTRAR_ENCRYPTION_KEY": key}),
        "REGISTRAR_ENCRYPTION_KEY is derived from SECRET_KEY",
        "REGISTRAR_OLD_ENCRYPTION_KEYS",
    )
    # still readable during a move away from it: an old key may be the derived one
    result = _import_settings(PROD | {"REGISTRAR_OLD_ENCRYPTION_KEYS": key})
    assert result.returncode == 0, result.stderr


def test_production_with_real_secrets_starts_with_debug_off():
    result = _import_settings(PROD, _SNIPPET)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "django.db.backends.postgresql", GOOD_SECRET]


def test_embedded_mode_only_when_asked_for(tmp_path):
    result = _import_settings({"REGISTRAR_EMBEDDED": "1", "REGISTRAR_DATA_DIR": str(tmp_path)}, _SNIPPET)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "django.db.backends.sqlite3", EMBEDDED_SECRET_KEY]
    # the test settings' shape: embedded keys on a real PostgreSQL
    result = _import_settings({"REGISTRAR_EMBEDDED": "1", "DATABASE_URL": PROD["DATABASE_URL"]}, _SNIPPET)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:4] == ["True", "True", "True", "django.db.backends.postgresql"]


def test_an_sqlite_database_url_connects(tmp_path):
    """PostgreSQL-only connection options stay off an SQLite DATABASE_URL (the invariant matrix runs on both)."""
    snippet = "import django; django.setup(); from django.db import connection; connection.ensure_connection()"
    result = _import_settings({"REGISTRAR_EMBEDDED": "1", "DATABASE_URL": f"sqlite:///{tmp_path}/r.sqlite3"}, snippet)
    assert result.returncode == 0, result.stderr


def test_the_embedded_broker_keeps_every_file_under_the_data_dir(tmp_path):
    """kombu's filesystem transport (make run) writes its messages and its exchange table (``control_folder``)
    under REGISTRAR_DATA_DIR, nothing into the directory it runs in."""
    workdir, data = tmp_path / "cwd", tmp_path / "data"
    workdir.mkdir()
    snippet = (
        "import django; django.setup(); from portal.celery import app; "
        "app.send_task('portal.tasks.heartbeat', args=('celery',)); "
        "print(type(app.connection_for_write().transport).__module__)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "CELERY_", *_SHAPE))}
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        env=clean
        | {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "REGISTRAR_EMBEDDED": "1",
            "REGISTRAR_DATA_DIR": str(data),
            "PYTHONPATH": str(ROOT),
        },
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert list(workdir.iterdir()) == []
    assert (data / "broker" / "control" / "celery.exchange").is_file()
    assert len(list((data / "broker" / "out").iterdir())) == 1  # the message
    assert result.stdout.strip() == "portal.broker"  # messages renamed into place whole
