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


def _import_settings(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_URL", "DEBUG", "SECRET_KEY", "REDIS", "REGISTRAR_LOG_"))}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=clean | {"DJANGO_SETTINGS_MODULE": "portal.settings"} | env,
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_settings_module_fails_fast_on_malformed_database_url():
    result = _import_settings({"DATABASE_URL": "postgres://u@h:port/db", "DEBUG": "true"})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DATABASE_URL" in result.stderr


def test_production_requires_secret_and_encryption_key():
    prod = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/registrar", "DEBUG": "false",
            "ALLOWED_HOSTS": "registrar.example.com"}
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
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DEBUG", "SECRET_KEY", "REDIS"))}
    base = clean | {"DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "true",
                    "DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar"}  # fmt: skip

    def run(**env: str) -> str:
        result = subprocess.run([sys.executable, "-c", snippet], env=base | env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run() == "60 True True 5"
    assert run(DATABASE_CONN_MAX_AGE="5", DATABASE_CONN_HEALTH_CHECKS="false") == "5 False True 5"
    assert run(DATABASE_PREPARED_STATEMENTS="false") == "60 True None None"  # behind an old PgBouncer
