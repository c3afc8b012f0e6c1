"""Registrar settings: every value comes from the environment, read here and nowhere else.

Two shapes:

* **embedded** (nothing set): SQLite under ``data/``, Celery over kombu's filesystem transport,
  DEBUG on, demo mode. ``make run`` uses it; no server is needed.
* **production**: ``DATABASE_URL`` (PostgreSQL), ``REDIS_URL`` (Celery broker + cache),
  ``SECRET_KEY``, ``ALLOWED_HOSTS``, ``REGISTRAR_ENCRYPTION_KEY``; DEBUG off, secure cookies, HSTS.

A malformed value raises ``ImproperlyConfigured`` at import time.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from portal.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_required,
    env_str,
    parse_database_url,
    parse_redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("REGISTRAR_DATA_DIR") or BASE_DIR / "data")

DATABASE_URL = env_str("DATABASE_URL") or ""
REDIS_URL = env_str("REDIS_URL") or ""
EMBEDDED = not DATABASE_URL

DEBUG = env_bool("DEBUG", EMBEDDED)
DEMO_MODE = env_bool("REGISTRAR_DEMO_MODE", EMBEDDED)

if DEBUG or EMBEDDED:
    SECRET_KEY = env_str("SECRET_KEY") or "registrar-embedded-insecure-key-do-not-use-in-production"
else:
    SECRET_KEY = env_required("SECRET_KEY")
    if len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters in production")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Key for IdP credentials at rest (Fernet, 32 url-safe base64 bytes). In embedded mode a key is
# derived from SECRET_KEY so the demo works out of the box; production must set its own.
_encryption_key = env_str("REGISTRAR_ENCRYPTION_KEY")
if not _encryption_key:
    if not (DEBUG or EMBEDDED):
        raise ImproperlyConfigured("REGISTRAR_ENCRYPTION_KEY must be set in production (a Fernet key)")
    _encryption_key = base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()
try:
    if len(base64.urlsafe_b64decode(_encryption_key.encode())) != 32:
        raise ValueError
except (ValueError, TypeError):
    raise ImproperlyConfigured(
        "REGISTRAR_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
        'generate one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
    )
REGISTRAR_ENCRYPTION_KEYS = [_encryption_key] + env_list("REGISTRAR_OLD_ENCRYPTION_KEYS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
    "portal",
    "inventory",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.RequestIdMiddleware",
    # Agents' registration endpoints skip everything below (browser middleware): see its docstring.
    "portal.middleware.MachineEndpointMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
AUTH_USER_MODEL = "portal.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.registrar",
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": parse_database_url(DATABASE_URL)}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "registrar.sqlite3",
            "OPTIONS": {
                # WAL lets the web server and the worker read while the other writes;
                # IMMEDIATE transactions serialise writers instead of failing with "locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
if DATABASE_URL:
    # Persistent connections: Celery closes a connection after each task unless it may be reused, and a
    # new PostgreSQL connection per outbox delivery costs more than the delivery itself.
    # Assigned, not setdefault: parse_database_url already filled both with its defaults.
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("DATABASE_CONN_HEALTH_CHECKS", True)
    if env_bool("DATABASE_PREPARED_STATEMENTS", True):
        # Server-side parameter binding, and psycopg prepares a statement on its 5th run on a connection: the
        # server stops re-planning the hot queries (planning the intake's token lookup alone cost PostgreSQL
        # more CPU than running it) and psycopg stops quoting parameters into the SQL text. Django leaves
        # both off by default for transaction-mode poolers; PgBouncer >= 1.21 (max_prepared_statements) copes.
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    parse_redis_url(REDIS_URL)
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- allauth -------------------------------------------------------------------------------
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
# People are provisioned by admins or the company directory (SCIM); nobody signs themselves up.
ACCOUNT_ADAPTER = "portal.adapters.NoSignupAccountAdapter"
SOCIALACCOUNT_ADAPTER = "portal.adapters.RegistrarSocialAccountAdapter"
ACCOUNT_SESSION_REMEMBER = None
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]

OIDC_SSO_SERVER_URL = env_str("OIDC_SSO_SERVER_URL")
SOCIALACCOUNT_PROVIDERS: dict = {}
if OIDC_SSO_SERVER_URL:
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "APPS": [
            {
                "provider_id": env_str("OIDC_SSO_PROVIDER_ID", "sso"),
                "name": env_str("OIDC_SSO_NAME", "Single sign-on"),
                "client_id": env_required("OIDC_SSO_CLIENT_ID"),
                "secret": env_required("OIDC_SSO_CLIENT_SECRET"),
                "settings": {"server_url": OIDC_SSO_SERVER_URL},
            }
        ]
    }

# --- security ------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from a <meta> tag, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
    }
}

# --- REST framework / OpenAPI ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Registrar API",
    "DESCRIPTION": "Governed OAuth dynamic client registration (RFC 7591/7592) and the management API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's files come from drf-spectacular-sidecar through staticfiles (our origin, our CSP), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery --------------------------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    # kombu's filesystem transport: a broker that needs no server, for make run.
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("out", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "data_folder_processed": str(_broker_dir / "processed"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90, minimum=1)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- e-mail --------------------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEMO_MODE else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "registrar@localhost")

# --- Registrar -----------------------------------------------------------------------------
REGISTRAR_VERSION = "0.1.0"
REGISTRAR_PUBLIC_URL = (env_str("REGISTRAR_PUBLIC_URL") or "").rstrip("/")
REGISTRAR_DEMO_PASSWORD = env_str("REGISTRAR_DEMO_PASSWORD")
REGISTRAR_SLACK_WEBHOOK_URL = env_str("REGISTRAR_SLACK_WEBHOOK_URL")
REGISTRAR_INLINE_DELIVERY_TIMEOUT = float(env_int("REGISTRAR_INLINE_DELIVERY_TIMEOUT_MS", 2000, minimum=50)) / 1000
REGISTRAR_REGISTER_RATE_PER_TOKEN = env_str("REGISTRAR_REGISTER_RATE_PER_TOKEN", "120/m")
REGISTRAR_REGISTER_RATE_PER_IP = env_str("REGISTRAR_REGISTER_RATE_PER_IP", "600/m")
REGISTRAR_MAX_BODY_BYTES = env_int("REGISTRAR_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
REGISTRAR_REQUEST_LAPSE_DAYS = env_int("REGISTRAR_REQUEST_LAPSE_DAYS", 7, minimum=1)
REGISTRAR_SLA_WARN_HOURS = env_int("REGISTRAR_SLA_WARN_HOURS", 4, minimum=1)
REGISTRAR_SLA_LATE_HOURS = env_int("REGISTRAR_SLA_LATE_HOURS", 24, minimum=1)
REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES = env_int("REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES", 15, minimum=0)
REGISTRAR_ORPHAN_GRACE_HOURS = env_int("REGISTRAR_ORPHAN_GRACE_HOURS", 72, minimum=0)
REGISTRAR_ORPHAN_RETIRE_DAYS = env_int("REGISTRAR_ORPHAN_RETIRE_DAYS", 30, minimum=0)
REGISTRAR_STALE_DAYS = env_int("REGISTRAR_STALE_DAYS", 30, minimum=1)
REGISTRAR_EXPIRY_REMINDER_DAYS = [int(d) for d in env_list("REGISTRAR_EXPIRY_REMINDER_DAYS", ["7", "1"])]
REGISTRAR_OUTBOX_MAX_ATTEMPTS = env_int("REGISTRAR_OUTBOX_MAX_ATTEMPTS", 8, minimum=1)
# Outbox delivery (inventory.delivery): a worker's lease on an entry must outlast one delivery
# (a few connector requests of REGISTRAR_CONNECTOR_TIMEOUT_SECONDS each); retries back off
# exponentially from BASE to MAX seconds, with jitter.
REGISTRAR_OUTBOX_LEASE_SECONDS = env_int("REGISTRAR_OUTBOX_LEASE_SECONDS", 120, minimum=1)
REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS = env_float("REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS", 5.0, minimum=0.0)
REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS = env_float("REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS", 600.0, minimum=0.0)
REGISTRAR_CONNECTOR_TIMEOUT_SECONDS = env_float("REGISTRAR_CONNECTOR_TIMEOUT_SECONDS", 10.0, minimum=0.1)
REGISTRAR_OUTBOX_BATCH_SIZE = env_int("REGISTRAR_OUTBOX_BATCH_SIZE", 100, minimum=1)  # clients per requeued task
REGISTRAR_OUTBOX_PARALLEL_CALLS = env_int("REGISTRAR_OUTBOX_PARALLEL_CALLS", 4, minimum=1)  # IdP calls in flight per worker
REGISTRAR_SWEEP_BATCH_SIZE = env_int("REGISTRAR_SWEEP_BATCH_SIZE", 500, minimum=1)
REGISTRAR_SCIM_TOKEN = env_str("REGISTRAR_SCIM_TOKEN")
# Dashboards and the framework report are snapshots recomputed at most this often (0 = always fresh).
REGISTRAR_REPORT_CACHE_SECONDS = env_int("REGISTRAR_REPORT_CACHE_SECONDS", 60, minimum=0)

# --- audit transparency log (docs/audit-log.md) ---------------------------------------------------
# The log's Ed25519 key, as a C2SP signed-note signer key ("PRIVATE+KEY+<origin>+<id>+<key>", made by
# `manage.py log_keygen`), from the environment or a file — never from the database. Processes that only
# show proofs (web servers) may have the public verifier key alone; the sequencer needs the signer key.
# Checkpoints signed by earlier keys keep verifying with REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS (rotation).
REGISTRAR_LOG_SIGNING_KEY = env_str("REGISTRAR_LOG_SIGNING_KEY") or None
REGISTRAR_LOG_SIGNING_KEY_FILE = env_str("REGISTRAR_LOG_SIGNING_KEY_FILE") or None
REGISTRAR_LOG_VERIFIER_KEY = env_str("REGISTRAR_LOG_VERIFIER_KEY") or None
REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS = env_list("REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS", [])
# The origin line (and key name) of a key generated here: a schema-less URL naming this log.
REGISTRAR_LOG_ORIGIN = env_str("REGISTRAR_LOG_ORIGIN") or "registrar.localhost/audit-log"
REGISTRAR_LOG_GENERATE_KEY = False
if not (REGISTRAR_LOG_SIGNING_KEY or REGISTRAR_LOG_SIGNING_KEY_FILE or REGISTRAR_LOG_VERIFIER_KEY):
    if not (DEBUG or EMBEDDED):
        raise ImproperlyConfigured(
            "REGISTRAR_LOG_SIGNING_KEY (or REGISTRAR_LOG_SIGNING_KEY_FILE) must be set in production: the audit "
            "log's Ed25519 signer key; generate one with: python manage.py log_keygen --origin <host>/audit-log"
        )
    # Embedded and development: a key generated on first use under data/ (mode 0600).
    REGISTRAR_LOG_SIGNING_KEY_FILE = str(DATA_DIR / "log-signing.key")
    REGISTRAR_LOG_GENERATE_KEY = True
try:
    from portal.tlog.note import NoteError, parse_signer_key, parse_verifier_key

    if REGISTRAR_LOG_SIGNING_KEY:
        parse_signer_key(REGISTRAR_LOG_SIGNING_KEY)
    for _key in [REGISTRAR_LOG_VERIFIER_KEY, *REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS]:
        if _key:
            parse_verifier_key(_key)
except NoteError as exc:
    raise ImproperlyConfigured(f"audit log key: {exc} (REGISTRAR_LOG_SIGNING_KEY / REGISTRAR_LOG_*VERIFIER_KEY*)")
# Where every checkpoint is copied besides the database, comma-separated: a directory (append-only files,
# one per day) or syslog: / syslog://host:port. See docs/audit-log.md for object storage with retention lock.
REGISTRAR_LOG_WITNESS = env_list("REGISTRAR_LOG_WITNESS", [str(DATA_DIR / "witness")])
for _witness in REGISTRAR_LOG_WITNESS:
    if "://" in _witness and not _witness.startswith("syslog://"):
        raise ImproperlyConfigured(f"REGISTRAR_LOG_WITNESS: {_witness!r} is neither a directory nor syslog:…")
REGISTRAR_LOG_BATCH_SIZE = env_int("REGISTRAR_LOG_BATCH_SIZE", 10000, minimum=1)  # events sealed per checkpoint
# After a commit that appended events, ask a worker to run the sequencer now rather than at the next beat.
REGISTRAR_LOG_NUDGE = env_bool("REGISTRAR_LOG_NUDGE", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"kv": {"format": "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One INFO line per IdP call is noise (and CPU) at worker speed; connectors log their own
        # censored key=value events.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
