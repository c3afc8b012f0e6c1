"""Registrar settings: every value comes from the environment, read here and nowhere else.

One module on purpose (over 400 lines): every setting, its default and its validation in one place to read
and review, matching contrib/registrar.env.example line for line.

Two shapes, and Registrar never guesses which one it is in:

* **embedded**, only with ``REGISTRAR_EMBEDDED=1`` (``make run``, the test settings): SQLite under ``data/``
  unless ``DATABASE_URL`` is set, Celery over kombu's filesystem transport, DEBUG and demo mode on by default,
  and demo-grade keys (a built-in ``SECRET_KEY``, an encryption key derived from it) when none are given.
* **production**, otherwise: ``DATABASE_URL``, ``SECRET_KEY`` and ``REGISTRAR_ENCRYPTION_KEY`` are required,
  and the publicly known demo values are refused; plus ``REDIS_URL`` (Celery broker + cache) and
  ``ALLOWED_HOSTS``; DEBUG off, secure cookies, HSTS.

A missing, malformed or known-insecure value raises ``ImproperlyConfigured`` at import time, naming the
variable and how to produce a good one.
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
    env_rate,
    env_required,
    env_str,
    parse_database_url,
    parse_networks,
    parse_redis_url,
)
from portal.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("REGISTRAR_DATA_DIR") or BASE_DIR / "data")

EMBEDDED = env_bool("REGISTRAR_EMBEDDED", False)
DATABASE_URL = env_str("DATABASE_URL") or ""
if DATABASE_URL:
    _database = parse_database_url(DATABASE_URL)
elif not EMBEDDED:
    raise ImproperlyConfigured(
        "DATABASE_URL must be set, e.g. postgres://registrar@db.internal:5432/registrar "
        "(or set REGISTRAR_EMBEDDED=1 for the self-contained demo: SQLite and demo keys, never for real use)"
    )
REDIS_URL = env_str("REDIS_URL") or ""

DEBUG = env_bool("DEBUG", EMBEDDED)
DEMO_MODE = env_bool("REGISTRAR_DEMO_MODE", EMBEDDED)

# Public (it is in this file): only ever acceptable in embedded mode.
EMBEDDED_SECRET_KEY = "registrar-embedded-insecure-key-do-not-use-in-production"
_GENERATE_SECRET_KEY = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
_GENERATE_ENCRYPTION_KEY = (
    'generate one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL (a CSP source)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _derived_encryption_key(secret_key: str) -> str:
    """The encryption key embedded mode derives from SECRET_KEY (so the demo needs no second secret)."""
    return base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()).decode()


SECRET_KEY = env_str("SECRET_KEY") or ""
if not EMBEDDED:
    if not SECRET_KEY:
        raise ImproperlyConfigured(f"SECRET_KEY must be set (at least 32 random characters); {_GENERATE_SECRET_KEY}")
    if SECRET_KEY == EMBEDDED_SECRET_KEY or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured(
            f"SECRET_KEY is a publicly known demo value and is refused outside REGISTRAR_EMBEDDED=1; "
            f"{_GENERATE_SECRET_KEY}"
        )
    if len(SECRET_KEY) < 32:
        raise ImproperlyConfigured(f"SECRET_KEY must be at least 32 characters; {_GENERATE_SECRET_KEY}")
SECRET_KEY = SECRET_KEY or EMBEDDED_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Key for IdP credentials at rest (Fernet, 32 url-safe base64 bytes). Embedded mode derives one from
# SECRET_KEY so the demo works out of the box; anywhere else it is a secret of its own, and a key derived
# from SECRET_KEY the same way is refused (anyone holding SECRET_KEY, or reading this file for the demo
# default, could decrypt the IdP credentials).
_encryption_key = env_str("REGISTRAR_ENCRYPTION_KEY") or ""
if not _encryption_key:
    if not EMBEDDED:
        raise ImproperlyConfigured(
            f"REGISTRAR_ENCRYPTION_KEY must be set (a Fernet key for IdP credentials at rest); "
            f"{_GENERATE_ENCRYPTION_KEY}"
        )
    _encryption_key = _derived_encryption_key(SECRET_KEY)
elif not EMBEDDED and _encryption_key in (
    _derived_encryption_key(EMBEDDED_SECRET_KEY),
    _derived_encryption_key(SECRET_KEY),
):
    raise ImproperlyConfigured(
        "REGISTRAR_ENCRYPTION_KEY is derived from SECRET_KEY (the embedded demo's key) and is refused outside "
        f"REGISTRAR_EMBEDDED=1; {_GENERATE_ENCRYPTION_KEY}. Existing credentials stay readable if the old key "
        "is listed in REGISTRAR_OLD_ENCRYPTION_KEYS"
    )
try:
    if len(base64.urlsafe_b64decode(_encryption_key.encode())) != 32:
        raise ValueError
except (ValueError, TypeError):
    raise ImproperlyConfigured(
        f"REGISTRAR_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes); {_GENERATE_ENCRYPTION_KEY}"
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
    # Health and metrics probes from REGISTRAR_PROBE_NETWORKS are answered here, before the host and TLS
    # checks below: first in the list so it sees the socket peer (see its docstring for why that is safe).
    "portal.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.RequestIdMiddleware",
    # A database outage: 503 + Retry-After (JSON for agents, a short page for people), one warning per outage.
    "portal.unavailable.DatabaseUnavailableMiddleware",
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
    # Privileged people without a second factor in this session go no further (portal.mfa).
    "portal.mfa.MfaRequiredMiddleware",
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
    DATABASES = {"default": _database}
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
    if env_bool("DATABASE_PREPARED_STATEMENTS", True) and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Server-side parameter binding, and psycopg prepares a statement on its 5th run on a connection: the
        # server stops re-planning the hot queries (planning the intake's token lookup alone cost PostgreSQL
        # more CPU than running it) and psycopg stops quoting parameters into the SQL text. Django leaves
        # both off by default for transaction-mode poolers; PgBouncer >= 1.21 (max_prepared_statements) copes.
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)

# Reads on a replica (portal.dbrouter, docs/scale.md "Reads on a replica"): a PostgreSQL streaming standby that the
# dashboards, reports, inventory search and exports and the read-only API read while it lags less than
# REGISTRAR_REPLICA_MAX_LAG_SECONDS; everything else, and whoever has just written, reads the primary. Unset: no
# 'replica' alias, no router, no middleware.
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL") or ""
REGISTRAR_REPLICA_MAX_LAG_SECONDS = env_float("REGISTRAR_REPLICA_MAX_LAG_SECONDS", 5.0, minimum=0.0)
if DATABASE_REPLICA_URL:
    _replica = parse_database_url(DATABASE_REPLICA_URL, "DATABASE_REPLICA_URL")
    if not (_replica["ENGINE"].endswith("postgresql") and DATABASES["default"]["ENGINE"].endswith("postgresql")):
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL is a PostgreSQL streaming standby of the PostgreSQL in DATABASE_URL "
            "(postgres://registrar@db-replica.internal:5432/registrar); leave it unset otherwise"
        )
    for _setting in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS"):
        _replica[_setting] = DATABASES["default"][_setting]
    _replica_options = _replica.setdefault("OPTIONS", {})
    _default_options = DATABASES["default"].get("OPTIONS", {})
    _replica_options.update(
        {k: v for k, v in _default_options.items() if k in ("server_side_binding", "prepare_threshold")}
    )
    # A standby that stops answering costs a request this long at most, then the primary serves (portal.dbrouter).
    _replica_options.setdefault("connect_timeout", 2)
    DATABASES["replica"] = _replica
    DATABASE_ROUTERS = ["portal.dbrouter.ReplicaRouter"]
    # Before the session middleware: a request's state (did it write?) spans the session's own save.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware"),
        "portal.dbrouter.ReadYourWritesMiddleware",
    )
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

# Login throttling (portal.loginthrottle). The client address is the one the trusted proxies saw: with
# REGISTRAR_TRUSTED_PROXY_COUNT = N the N-th X-Forwarded-For entry from the right (what the outermost
# trusted proxy appended), or the header named by REGISTRAR_TRUSTED_CLIENT_IP_HEADER; with neither, the
# peer address (REMOTE_ADDR), and X-Forwarded-For is ignored because any client can send it. allauth
# reads both settings for its own rate limits too.
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("REGISTRAR_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
ALLAUTH_TRUSTED_CLIENT_IP_HEADER = env_str("REGISTRAR_TRUSTED_CLIENT_IP_HEADER") or None
# Failed logins counted per client address (any account) and per account *from one address*: a guesser
# is stopped at its own address while the account's owner, elsewhere, still signs in. Guesses at one
# account from many addresses are slowed down (REGISTRAR_LOGIN_SLOWDOWN_*), never turned into a lock-out.
ACCOUNT_RATE_LIMITS = {
    "login_failed": f"{env_rate('REGISTRAR_LOGIN_FAILURES_PER_ADDRESS', '10/m')}/ip,"
    f"{env_rate('REGISTRAR_LOGIN_FAILURES_PER_ACCOUNT', '5/5m')}/key",
}
REGISTRAR_LOGIN_SLOWDOWN_AFTER = env_int("REGISTRAR_LOGIN_SLOWDOWN_AFTER", 10, minimum=1)
REGISTRAR_LOGIN_SLOWDOWN_MAX_SECONDS = env_int("REGISTRAR_LOGIN_SLOWDOWN_MAX_SECONDS", 300, minimum=1)
REGISTRAR_LOGIN_SLOWDOWN_WINDOW_SECONDS = env_int("REGISTRAR_LOGIN_SLOWDOWN_WINDOW_SECONDS", 3600, minimum=60)
REGISTRAR_LOGIN_KNOWN_ADDRESS_DAYS = env_int("REGISTRAR_LOGIN_KNOWN_ADDRESS_DAYS", 90, minimum=1)
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
                "settings": {
                    "server_url": OIDC_SSO_SERVER_URL,
                    "scope": (env_str("OIDC_SSO_SCOPES") or "openid profile email").split(),
                    "oauth_pkce_enabled": True,
                },
            }
        ]
    }

# --- single sign-on and two-factor authentication (portal.sso, portal.mfa; README "SSO and MFA") -------
# First SSO login links to the existing person with the same e-mail, only when the IdP says it is verified.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
# Roles from the IdP's groups claim: "idp-group=role,other-group=role" (roles: approver, owner, security, admin,
# as in portal.roles.Role). Unset: SSO changes no role.
REGISTRAR_SSO_GROUPS_CLAIM = env_str("REGISTRAR_SSO_GROUPS_CLAIM", "groups")
REGISTRAR_SSO_GROUP_ROLES: dict[str, list[str]] = {}
for _pair in env_list("REGISTRAR_SSO_GROUP_ROLES", []):
    _group, _, _role = _pair.partition("=")
    if not _group.strip() or _role.strip() not in ("approver", "owner", "security", "admin"):
        raise ImproperlyConfigured(
            f"REGISTRAR_SSO_GROUP_ROLES: {_pair!r} is not group=role with role approver, owner, security or admin"
        )
    REGISTRAR_SSO_GROUP_ROLES.setdefault(_group.strip(), []).append(_role.strip())
# Approvers, security, admins and staff must use a second factor on every session (portal.mfa).
REGISTRAR_MFA_REQUIRED = env_bool("REGISTRAR_MFA_REQUIRED", True)
MFA_ADAPTER = "portal.mfa.RegistrarMFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "webauthn", "recovery_codes"]
MFA_TOTP_ISSUER = env_str("REGISTRAR_MFA_TOTP_ISSUER", "Registrar")
# Security keys over plain http only on localhost in DEBUG (make run); production is HTTPS.
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = DEBUG

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

# The SSO button posts to allauth, which redirects to the IdP: browsers hold that redirect to form-action too.
_sso_origins = [_origin(OIDC_SSO_SERVER_URL)] if OIDC_SSO_SERVER_URL else []
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'", *_sso_origins],
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
    "DEFAULT_PARSER_CLASSES": [
        "portal.api.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "portal.paging.BoundedLimitOffsetPagination",
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
    # One name for the choice set a request's "via" and a client's "created_via" share.
    "ENUM_NAME_OVERRIDES": {"CreatedViaEnum": "inventory.choices.CreatedVia"},
}

# --- Celery --------------------------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
    if CELERY_BROKER_URL.split("://", 1)[0] in ("redis", "rediss"):
        # kombu's Redis transport with the guard that keeps a Redis outage from ending a worker (portal/broker.py;
        # celery/kombu#582).
        CELERY_BROKER_TRANSPORT = "portal.broker:Transport"
else:
    # kombu's filesystem transport: a broker that needs no server, for make run. Every folder it uses is under
    # DATA_DIR, its exchange table (control_folder, "control/" in the working directory by default) included.
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    # kombu's transport with messages renamed into place whole (portal/broker.py says why)
    CELERY_BROKER_TRANSPORT = "portal.broker:FilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "data_folder_processed": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
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
# Where EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend writes messages (one file per connection).
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(DATA_DIR / "mail"))

# --- Registrar -----------------------------------------------------------------------------
REGISTRAR_VERSION = "0.1.0"
REGISTRAR_PUBLIC_URL = (env_str("REGISTRAR_PUBLIC_URL") or "").rstrip("/")
REGISTRAR_DEMO_PASSWORD = env_str("REGISTRAR_DEMO_PASSWORD")
REGISTRAR_SLACK_WEBHOOK_URL = env_str("REGISTRAR_SLACK_WEBHOOK_URL")
REGISTRAR_INLINE_DELIVERY_TIMEOUT = float(env_int("REGISTRAR_INLINE_DELIVERY_TIMEOUT_MS", 2000, minimum=50)) / 1000
# The inline wait's circuit per IdP and bulkhead, per web process (portal.circuit, inventory.outbox.deliver;
# docs/operations.md, "The IdP is slow, down or answers 5xx").
REGISTRAR_INLINE_MAX_WAITERS = env_int("REGISTRAR_INLINE_MAX_WAITERS", 2, minimum=0)
REGISTRAR_INLINE_CIRCUIT_WINDOW = env_int("REGISTRAR_INLINE_CIRCUIT_WINDOW", 20, minimum=1)
REGISTRAR_INLINE_CIRCUIT_MIN_SAMPLES = env_int("REGISTRAR_INLINE_CIRCUIT_MIN_SAMPLES", 5, minimum=1)
REGISTRAR_INLINE_CIRCUIT_FAILURE_RATIO = env_float("REGISTRAR_INLINE_CIRCUIT_FAILURE_RATIO", 0.5, minimum=0.01)
REGISTRAR_INLINE_CIRCUIT_EWMA_ALPHA = env_float("REGISTRAR_INLINE_CIRCUIT_EWMA_ALPHA", 0.3, minimum=0.01)
for _name in ("REGISTRAR_INLINE_CIRCUIT_FAILURE_RATIO", "REGISTRAR_INLINE_CIRCUIT_EWMA_ALPHA"):
    if globals()[_name] > 1:
        raise ImproperlyConfigured(f"{_name} must be <= 1")
REGISTRAR_INLINE_CIRCUIT_OPEN_SECONDS = env_float("REGISTRAR_INLINE_CIRCUIT_OPEN_SECONDS", 10.0, minimum=0.1)
REGISTRAR_REGISTER_RATE_PER_TOKEN = env_str("REGISTRAR_REGISTER_RATE_PER_TOKEN", "120/m")
REGISTRAR_REGISTER_RATE_PER_IP = env_str("REGISTRAR_REGISTER_RATE_PER_IP", "600/m")
REGISTRAR_MAX_BODY_BYTES = env_int("REGISTRAR_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
# RFC 7592: how long the previous registration access token keeps working after a rotation (a lost response).
REGISTRAR_RAT_GRACE_SECONDS = env_int("REGISTRAR_RAT_GRACE_SECONDS", 120, minimum=0, maximum=3600)
# Refused credentials on the registration API are tallied per minute, source and credential prefix
# (approvals.unauthorized); past this many rows in one minute, new sources share an "other sources" bucket.
REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE = env_int("REGISTRAR_UNAUTHORIZED_SOURCES_PER_MINUTE", 100, minimum=1)
REGISTRAR_REQUEST_LAPSE_DAYS = env_int("REGISTRAR_REQUEST_LAPSE_DAYS", 7, minimum=1)
# Human approvals of high-risk requests only inside this window, e.g. "Mon-Fri 08:00-18:00 Europe/Berlin"; outside
# it an approval is refused (409) and the request waits, pending (approvals.conditions). Empty: any time.
REGISTRAR_HIGH_RISK_APPROVAL_WINDOW = env_str("REGISTRAR_HIGH_RISK_APPROVAL_WINDOW") or ""
REGISTRAR_SLA_WARN_HOURS = env_int("REGISTRAR_SLA_WARN_HOURS", 4, minimum=1)
REGISTRAR_SLA_LATE_HOURS = env_int("REGISTRAR_SLA_LATE_HOURS", 24, minimum=1)
REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES = env_int("REGISTRAR_APPROVER_MAIL_INTERVAL_MINUTES", 15, minimum=0)
REGISTRAR_ORPHAN_GRACE_HOURS = env_int("REGISTRAR_ORPHAN_GRACE_HOURS", 72, minimum=0)
REGISTRAR_ORPHAN_RETIRE_DAYS = env_int("REGISTRAR_ORPHAN_RETIRE_DAYS", 30, minimum=0)
# An anonymous (MCP) client that is used is renewed to its use + its lifetime, at most once per this many hours
# (inventory.usage, docs/mcp.md "Expire unless used"); unused, it expires at its short lifetime.
REGISTRAR_ANONYMOUS_USE_WINDOW_HOURS = env_int("REGISTRAR_ANONYMOUS_USE_WINDOW_HOURS", 24, minimum=1)
# Owners are reminded of an expiry relative to the client's lifetime: when this percentage of it is left, or
# REGISTRAR_EXPIRY_REMINDER_HOURS before it ends, whichever is later (inventory.notifications.notify_expiring).
REGISTRAR_EXPIRY_REMINDER_PERCENT = env_int("REGISTRAR_EXPIRY_REMINDER_PERCENT", 20, minimum=1, maximum=99)
REGISTRAR_EXPIRY_REMINDER_HOURS = env_int("REGISTRAR_EXPIRY_REMINDER_HOURS", 24, minimum=1)
REGISTRAR_OUTBOX_MAX_ATTEMPTS = env_int("REGISTRAR_OUTBOX_MAX_ATTEMPTS", 8, minimum=1)
# Outbox delivery (inventory.outbox): a worker's lease on an entry must outlast one delivery
# (a few connector requests of REGISTRAR_CONNECTOR_TIMEOUT_SECONDS each); retries back off
# exponentially from BASE to MAX seconds, with jitter.
REGISTRAR_OUTBOX_LEASE_SECONDS = env_int("REGISTRAR_OUTBOX_LEASE_SECONDS", 120, minimum=1)
REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS = env_float("REGISTRAR_OUTBOX_BACKOFF_BASE_SECONDS", 5.0, minimum=0.0)
REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS = env_float("REGISTRAR_OUTBOX_BACKOFF_MAX_SECONDS", 600.0, minimum=0.0)
REGISTRAR_CONNECTOR_TIMEOUT_SECONDS = env_float("REGISTRAR_CONNECTOR_TIMEOUT_SECONDS", 10.0, minimum=0.1)
REGISTRAR_OUTBOX_BATCH_SIZE = env_int("REGISTRAR_OUTBOX_BATCH_SIZE", 100, minimum=1)  # clients per requeued task
REGISTRAR_OUTBOX_PARALLEL_CALLS = env_int(
    "REGISTRAR_OUTBOX_PARALLEL_CALLS", 4, minimum=1
)  # IdP calls in flight per worker
REGISTRAR_SWEEP_BATCH_SIZE = env_int("REGISTRAR_SWEEP_BATCH_SIZE", 500, minimum=1)
REGISTRAR_SCIM_TOKEN = env_str("REGISTRAR_SCIM_TOKEN")
# Dashboards and the framework report are snapshots recomputed at most this often (0 = always fresh).
REGISTRAR_REPORT_CACHE_SECONDS = env_int("REGISTRAR_REPORT_CACHE_SECONDS", 60, minimum=0)

# --- outbound fetches of untrusted URLs (portal.safefetch: jwks_uri, metadata documents) ----
REGISTRAR_FETCH_TIMEOUT_SECONDS = env_float("REGISTRAR_FETCH_TIMEOUT_SECONDS", 5.0, minimum=0.1)
REGISTRAR_FETCH_MAX_BYTES = env_int("REGISTRAR_FETCH_MAX_BYTES", 64 * 1024, minimum=1024)
REGISTRAR_FETCH_CA_FILE = env_str("REGISTRAR_FETCH_CA_FILE") or ""  # extra trusted CAs (PEM), besides certifi's
if REGISTRAR_FETCH_CA_FILE and not Path(REGISTRAR_FETCH_CA_FILE).is_file():
    raise ImproperlyConfigured(f"REGISTRAR_FETCH_CA_FILE {REGISTRAR_FETCH_CA_FILE!r} is not a readable file")
# Test-only: lets the fetcher connect to loopback, where tests serve HTTPS with a test CA. Anywhere else it would
# let an agent make Registrar fetch from its own host, so it is refused outside embedded mode (which the test
# settings and `make run` ask for).
REGISTRAR_FETCH_ALLOW_LOOPBACK = env_bool("REGISTRAR_FETCH_ALLOW_LOOPBACK", False)
if REGISTRAR_FETCH_ALLOW_LOOPBACK and not EMBEDDED:
    raise ImproperlyConfigured(
        "REGISTRAR_FETCH_ALLOW_LOOPBACK is for tests only: it lets agents make Registrar fetch URLs on its own "
        "host. Unset it (it is honoured only with the test settings or in embedded mode)."
    )

# --- Client ID Metadata Documents (approvals.cimd, docs/cimd.md) ----------------------------------
# A document is at most this big and must arrive within the timeout; a valid one is cached for its
# Cache-Control max-age clamped to [MIN, MAX] seconds; a refusal is remembered for NEGATIVE seconds.
REGISTRAR_CIMD_MAX_BYTES = env_int("REGISTRAR_CIMD_MAX_BYTES", 5 * 1024, minimum=512)
REGISTRAR_CIMD_TIMEOUT_SECONDS = env_float("REGISTRAR_CIMD_TIMEOUT_SECONDS", 5.0, minimum=0.1)
REGISTRAR_CIMD_CACHE_MIN_SECONDS = env_int("REGISTRAR_CIMD_CACHE_MIN_SECONDS", 5 * 60, minimum=1)
REGISTRAR_CIMD_CACHE_MAX_SECONDS = env_int("REGISTRAR_CIMD_CACHE_MAX_SECONDS", 3 * 86400, minimum=1)
REGISTRAR_CIMD_NEGATIVE_CACHE_SECONDS = env_int("REGISTRAR_CIMD_NEGATIVE_CACHE_SECONDS", 60, minimum=0)
# An approved CIMD client whose document cannot be fetched (or is refused) for this long is suspended.
REGISTRAR_CIMD_UNREACHABLE_GRACE_HOURS = env_int("REGISTRAR_CIMD_UNREACHABLE_GRACE_HOURS", 72, minimum=1)
if REGISTRAR_CIMD_CACHE_MIN_SECONDS > REGISTRAR_CIMD_CACHE_MAX_SECONDS:
    raise ImproperlyConfigured(
        "REGISTRAR_CIMD_CACHE_MIN_SECONDS must not exceed REGISTRAR_CIMD_CACHE_MAX_SECONDS "
        f"({REGISTRAR_CIMD_CACHE_MIN_SECONDS} > {REGISTRAR_CIMD_CACHE_MAX_SECONDS})"
    )

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
    if not EMBEDDED:
        raise ImproperlyConfigured(
            "REGISTRAR_LOG_SIGNING_KEY (or REGISTRAR_LOG_SIGNING_KEY_FILE) must be set in production: the audit "
            "log's Ed25519 signer key; generate one with: python manage.py log_keygen --origin <host>/audit-log"
        )
    # Embedded mode: a key generated on first use under data/ (mode 0600).
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

# --- static files --------------------------------------------------------------------------
# WhiteNoise serves STATIC_ROOT from the WSGI server. Production uses hashed, pre-compressed files
# (``collectstatic`` at install or image build); DEBUG serves the source folders as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
if DEBUG:
    import warnings

    # In DEBUG WhiteNoise serves from the source folders (its finders); STATIC_ROOT exists only after collectstatic.
    warnings.filterwarnings("ignore", message=r"No directory at: ", category=UserWarning)

# --- health, metrics and worker heartbeats ---------------------------------------------------
# Probes from these networks reach /healthz, /readyz and /metrics without the ALLOWED_HOSTS and HTTPS checks
# (portal.middleware.ProbeMiddleware); everyone else goes through them, and /metrics then needs the token.
REGISTRAR_PROBE_NETWORKS = parse_networks(
    env_list("REGISTRAR_PROBE_NETWORKS", ["127.0.0.0/8", "::1/128"]), "REGISTRAR_PROBE_NETWORKS"
)
REGISTRAR_METRICS_TOKEN = env_str("REGISTRAR_METRICS_TOKEN") or None
if REGISTRAR_METRICS_TOKEN and len(REGISTRAR_METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("REGISTRAR_METRICS_TOKEN must be at least 32 characters")
# Checks whose failure makes /readyz answer 503; the others (IdPs, outbox age, workers) only report.
REGISTRAR_READYZ_REQUIRED = env_list("REGISTRAR_READYZ_REQUIRED", ["database", "cache", "broker"])
REGISTRAR_READYZ_TIMEOUT_SECONDS = env_float("REGISTRAR_READYZ_TIMEOUT_SECONDS", 2.0, minimum=0.1)
REGISTRAR_READYZ_IDP_CACHE_SECONDS = env_int("REGISTRAR_READYZ_IDP_CACHE_SECONDS", 30, minimum=0)
REGISTRAR_OUTBOX_AGE_WARN_SECONDS = env_int("REGISTRAR_OUTBOX_AGE_WARN_SECONDS", 300, minimum=1)
REGISTRAR_HEARTBEAT_SECONDS = env_int("REGISTRAR_HEARTBEAT_SECONDS", 30, minimum=5)
# Lists count at most this many rows (then show "10,000+"): no exact COUNT(*) over a large result set.
REGISTRAR_COUNT_THRESHOLD = env_int("REGISTRAR_COUNT_THRESHOLD", 10_000, minimum=1)
REGISTRAR_HEARTBEAT_QUEUES = env_list("REGISTRAR_HEARTBEAT_QUEUES", ["celery"])
# A Celery worker's own /metrics (IdP calls made by its pool), served by its main process; 0 = off.
REGISTRAR_WORKER_METRICS_PORT = env_int("REGISTRAR_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
REGISTRAR_WORKER_METRICS_ADDR = env_str("REGISTRAR_WORKER_METRICS_ADDR", "127.0.0.1")

# --- logging -------------------------------------------------------------------------------
# One configuration for the web server, the workers, beat and gunicorn's own lines (portal.logs); every line
# carries the request id and the Celery task id. key=value for people at a terminal, JSON for log pipelines.
LOG_FORMAT = env_str("LOG_FORMAT", "kv" if EMBEDDED else "json")
if LOG_FORMAT not in ("kv", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be kv or json, got {LOG_FORMAT!r}")
LOG_LEVEL = (env_str("LOG_LEVEL", "INFO") or "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
# Celery keeps its hands off the root logger; portal.celery applies LOGGING in its worker and beat processes.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
