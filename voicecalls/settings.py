"""Settings for voicecalls, read from the environment (12-factor).

Every value has a safe development default so `make run` works on a laptop; with
DEBUG off the process refuses to start while a secret still has its dev default.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

# How the environment is read; the logging, REST framework (and its error envelope) and
# OpenAPI schema (drf-spectacular) settings: kept apart for their length.
from voicecalls.drf_settings import DRF_STANDARDIZED_ERRORS, REST_FRAMEWORK  # noqa: F401
from voicecalls.env_settings import (
    database,
    database_timeout,
    duration,
    env,
    key_pairs,
    retry_schedule,
    secret,
    secrets,
    timeout,
    whole_number,
)
from voicecalls.logging_settings import logging_setting
from voicecalls.openapi_settings import SPECTACULAR_SETTINGS  # noqa: F401

BASE_DIR = Path(__file__).resolve().parent.parent

# A newcomer's shell has none of the variables below: `make run` writes a git-ignored
# .env on its first run (scripts/dev_env.py) with DEBUG=1 and generated dev secrets, read
# here so every README command works in a new shell. The real environment wins over the
# file; VOICECALLS_ENV_FILE names another one (os.devnull: none).
environ.Env.read_env(env.str("VOICECALLS_ENV_FILE", default=str(BASE_DIR / ".env")))

# Dev defaults of secrets. They are public (they are in this file), so production
# must override every one of them: see `_refuse_dev_secrets` below.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
DEV_CRYPTOGRAPHY_KEY = "dev-insecure-cryptography-key-change-me"
DEV_LIVEKIT_API_KEY = "devkey"
DEV_LIVEKIT_API_SECRET = "secret"

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = secret("SECRET_KEY", DEV_SECRET_KEY)
# Previous SECRET_KEYs (comma-separated): sessions, and the keyed hashes records keep
# (retained identities, erasure records, erased room names, idempotency), made under them,
# stay valid (docs/key-rotation.md).
SECRET_KEY_FALLBACKS = secrets("SECRET_KEY_FALLBACKS")
CRYPTOGRAPHY_KEY = secret("CRYPTOGRAPHY_KEY", DEV_CRYPTOGRAPHY_KEY)
# Previous CRYPTOGRAPHY_KEYs (comma-separated) stay readable until `rotate_provider_keys`
# re-encrypts with CRYPTOGRAPHY_KEY (docs/key-rotation.md).
CRYPTOGRAPHY_KEY_FALLBACKS = secrets("CRYPTOGRAPHY_KEY_FALLBACKS")

# The bearer token Prometheus scrapes GET /ops/metrics with; unset, that endpoint does
# not exist (404).
METRICS_TOKEN = secret("METRICS_TOKEN", "")

LIVEKIT_URL = env.str("LIVEKIT_URL", default="ws://localhost:7880")
LIVEKIT_API_KEY = secret("LIVEKIT_API_KEY", DEV_LIVEKIT_API_KEY)
LIVEKIT_API_SECRET = secret("LIVEKIT_API_SECRET", DEV_LIVEKIT_API_SECRET)


# Earlier LiveKit API keys whose webhooks are still accepted while LiveKit's
# `webhook.api_key` is switched to LIVEKIT_API_KEY (docs/key-rotation.md).
LIVEKIT_API_KEY_FALLBACKS = key_pairs("LIVEKIT_API_KEY_FALLBACKS")
if LIVEKIT_API_KEY in LIVEKIT_API_KEY_FALLBACKS:
    # LiveKit holds one secret per key: a rotation is to a new key, not a new secret.
    raise ImproperlyConfigured(
        "LIVEKIT_API_KEY_FALLBACKS names LIVEKIT_API_KEY: rotate to a new key "
        "(docs/key-rotation.md)"
    )
LIVEKIT_AGENT_NAME = env.str("LIVEKIT_AGENT_NAME", default="voicecalls-agent")
# Seconds LiveKit keeps a room open after the last participant left.
LIVEKIT_DEPARTURE_TIMEOUT = whole_number("LIVEKIT_DEPARTURE_TIMEOUT", 10)
LIVEKIT_TOKEN_TTL_SECONDS = whole_number("LIVEKIT_TOKEN_TTL_SECONDS", 900, least=60, most=900)
# Every RoomService request gives up after this long (LiveKit down must not hang a request).
LIVEKIT_API_TIMEOUT_SECONDS = duration("LIVEKIT_API_TIMEOUT_SECONDS", 5.0)
# `expire_calls` checks an active call against LiveKit once nothing was heard of it
# (webhook or agent event) for this long; webhooks can be lost.
CALL_RECONCILE_AFTER_SECONDS = whole_number("CALL_RECONCILE_AFTER_SECONDS", 120, least=1)
# An active call no agent joined this long after the user did fails `agent_not_joined`
# (`expire_calls`). livekit-agents gives a job's process 10 s to start and our agent
# fetches its session for up to 12 s before it connects: an agent later than 30 s is
# not coming, and the user hears silence until then.
CALL_AGENT_JOIN_TIMEOUT_SECONDS = whole_number("CALL_AGENT_JOIN_TIMEOUT_SECONDS", 30, least=1)


def _refuse_dev_secrets() -> None:
    dev_defaults = {
        "SECRET_KEY": (SECRET_KEY, DEV_SECRET_KEY),
        "CRYPTOGRAPHY_KEY": (CRYPTOGRAPHY_KEY, DEV_CRYPTOGRAPHY_KEY),
        "LIVEKIT_API_KEY": (LIVEKIT_API_KEY, DEV_LIVEKIT_API_KEY),
        "LIVEKIT_API_SECRET": (LIVEKIT_API_SECRET, DEV_LIVEKIT_API_SECRET),
    }
    unsafe = [name for name, (value, default) in dev_defaults.items() if value == default]
    if DEV_LIVEKIT_API_SECRET in LIVEKIT_API_KEY_FALLBACKS.values():
        unsafe.append("LIVEKIT_API_KEY_FALLBACKS")
    if unsafe:
        raise ImproperlyConfigured(
            "DEBUG is off but these secrets keep their public dev defaults: " + ", ".join(unsafe)
        )


if not DEBUG:
    _refuse_dev_secrets()
    if CRYPTOGRAPHY_KEY == SECRET_KEY:
        # One leak must not give away both sessions and customers' provider keys.
        raise ImproperlyConfigured("CRYPTOGRAPHY_KEY must differ from SECRET_KEY")
elif LIVEKIT_API_SECRET == DEV_LIVEKIT_API_SECRET:
    # `livekit-server --dev`'s secret is short by design; PyJWT warns on every token.
    from jwt.warnings import InsecureKeyLengthWarning

    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "voicecalls.admin_site.VoicecallsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, pinned, served from this host
    "drf_standardized_errors",
    # Before django_tasks_db: its `db_worker` command is voicecalls' own (a database
    # outage pauses the worker instead of ending it).
    "voicecalls",
    "django_tasks",
    "django_tasks_db",
    "django_guid",
    "accounts",
    "workflows",
    "calls",
    "providerkeys",
    "webhooks",
    "analysis",
    "billing",
    "telephony",
    "recordings",
    "privacy",
    "streams",
]

MIDDLEWARE = [
    # First: the connections a request opens carry the timeouts below.
    "voicecalls.db_timeouts.RequestTimeoutsMiddleware",
    "django_guid.middleware.guid_middleware",
    "voicecalls.logging.LogContextMiddleware",
    "voicecalls.middleware.APIHTTPSRequiredMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "voicecalls.middleware.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "voicecalls.urls"
CSRF_FAILURE_VIEW = "voicecalls.errors.csrf_failure"
# The API's paths have no trailing slash; never redirect to add one.
APPEND_SLASH = False

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
            ],
        },
    },
]

WSGI_APPLICATION = "voicecalls.wsgi.application"

DATABASES = {"default": database(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}

# PostgreSQL, the connections requests open (voicecalls.db_timeouts): a statement waiting
# on a lock, or running, past these is cancelled, a 503, so one stuck lock cannot hold
# every worker. 0: none (behind PgBouncer, which refuses them: set them on the role).
DATABASE_LOCK_TIMEOUT_SECONDS = database_timeout("DATABASE_LOCK_TIMEOUT_SECONDS", 5, most=600)
DATABASE_STATEMENT_TIMEOUT_SECONDS = database_timeout(
    "DATABASE_STATEMENT_TIMEOUT_SECONDS", 15, most=600
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="dbcache://voicecalls_cache")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves the admin's and Swagger UI's assets from the installed packages
# under runserver and gunicorn alike, DEBUG on or off: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True
# STATIC_ROOT exists only once someone runs the (optional) collectstatic.
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

# Request bodies over 1 MiB are refused with 413 before any parsing.
API_MAX_BODY_BYTES = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# --- Per-organization limits ------------------------------------------------------------
# Calls not yet ended (pending, connecting, active) an organization may have at once;
# Organization.concurrency_limit overrides it per organization. Over it: 429.
CALLS_CONCURRENCY_LIMIT = whole_number("CALLS_CONCURRENCY_LIMIT", 100)
# Create requests per organization ("<n>/<second|minute|hour|day>", else no start),
# counted in the database (accounts/rates.py) for every process; over it: 429.
API_CREATE_RATE = env.str("API_CREATE_RATE", default="600/minute")
# Workflow writes (create, replace, update: each keeps a new version of up to 1 MiB) per
# organization, counted like creates and besides them. Over it: 429 with Retry-After.
API_WORKFLOW_WRITE_RATE = env.str("API_WORKFLOW_WRITE_RATE", default="60/minute")
# Organizations (slugs) neither rate (creates, workflow writes) applies to, e.g. the
# benchmarks' own.
THROTTLE_EXEMPT_ORGANIZATIONS = env.list("THROTTLE_EXEMPT_ORGANIZATIONS", default=[])
# Organizations (slugs) whose calls no concurrency limit applies to (load tests, the
# benchmarks' own): creating a call takes neither the organization lock nor the count.
CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS = env.list(
    "CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS", default=[]
)

# --- Live call streams (streams/; README "Watching a call live") ----------------------
# Streams are fed by PostgreSQL LISTEN/NOTIFY over one direct connection per process:
# PgBouncer in transaction mode cannot LISTEN, so DATABASE_LISTEN_URL names the
# database itself when DATABASE_URL goes through a pooler. SQLite polls instead.
DATABASE_LISTEN = (
    env.db_url("DATABASE_LISTEN_URL") if env.str("DATABASE_LISTEN_URL", default="") else None
)
# Streams an organization may have open at once, over every process: over it, 429.
STREAMS_PER_ORGANIZATION = whole_number("STREAMS_PER_ORGANIZATION", 200)
# Streams one process (one event loop) serves at once, every organization's: each holds a
# thread and ≈ 145 KiB (bench/README.md). Over it: 503 with Retry-After.
STREAMS_PER_PROCESS = whole_number("STREAMS_PER_PROCESS", 2000)
# A comment line this often keeps proxies from closing a quiet stream; at the same
# beat each process renews its streams' leases and closes those of revoked keys.
STREAMS_HEARTBEAT_SECONDS = duration("STREAMS_HEARTBEAT_SECONDS", 15.0)
# A stream whose process stopped renewing it stops counting against the cap after this.
STREAMS_LEASE_SECONDS = duration("STREAMS_LEASE_SECONDS", 60.0)
# A lease its stream never started to renew (the client left while the request waited
# for an opening) stops counting after this.
STREAMS_LEASE_ADOPT_SECONDS = duration("STREAMS_LEASE_ADOPT_SECONDS", 10.0)
# A client that reads nothing for this long (its socket buffers full) is disconnected.
STREAMS_SEND_TIMEOUT_SECONDS = duration("STREAMS_SEND_TIMEOUT_SECONDS", 30.0)
# Seconds an ended call's stream stays open for the agent's last lines (late flush).
STREAMS_END_GRACE_SECONDS = duration("STREAMS_END_GRACE_SECONDS", 5.0, zero=True)
# SQLite only: how often the one poller per process looks for new events.
STREAMS_POLL_SECONDS = duration("STREAMS_POLL_SECONDS", 0.5)

# Idempotency-Key records are honoured for this long.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# A request holding an idempotency key longer than this may have its key taken over
# if it is dead (its row lock gone with its connection); a running one keeps it (409).
IDEMPOTENCY_LOCK_SECONDS = 60

# Background tasks (django-tasks) are rows in the database; `manage.py db_worker` runs
# them. Customer webhook deliveries use the `webhooks` queue.
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        # `dial`: phone calls being dialed, in a worker of their own (a ringing phone
        # holds its worker for up to the ringing timeout).
        "QUEUES": ["default", "webhooks", "analysis", "dial"],
    }
}

# Customer webhooks. Off in production: deliveries to loopback/private/link-local
# addresses and plain http are refused. Local development and tests turn it on.
WEBHOOKS_ALLOW_PRIVATE_URLS = env.bool("WEBHOOKS_ALLOW_PRIVATE_URLS", default=False)
# The end-of-call report is built no sooner than this many seconds after the call
# ended, so the agent's last transcript lines (flushed after the room closed) are in it.
WEBHOOKS_END_REPORT_DELAY = duration("WEBHOOKS_END_REPORT_DELAY", 15.0, zero=True)
# One delivery attempt gives up after this long (name lookup, connect, answer); it holds
# its delivery 20 s longer (webhooks.delivery.attempt_lease) before the sweep resends it.
WEBHOOKS_TIMEOUT_SECONDS = timeout("WEBHOOKS_TIMEOUT_SECONDS", 10.0, most=60)
# An endpoint nothing reached for this many days (and unchanged meanwhile) is disabled
# when a delivery gives up, not retried for ever; enabling it through the API resumes.
WEBHOOKS_DISABLE_AFTER_DAYS = duration("WEBHOOKS_DISABLE_AFTER_DAYS", 5.0)
# A delivery that ended (delivered, or failed for good) is kept, listed and replayable
# this many days after its last change, then deleted by `expire_data` with its attempts,
# and its event with the last of them (webhooks.retention). At least the days above: the
# check of a failing endpoint reads its successes that recent.
WEBHOOKS_DELIVERY_RETENTION_DAYS = whole_number("WEBHOOKS_DELIVERY_RETENTION_DAYS", 30, least=1)
if WEBHOOKS_DELIVERY_RETENTION_DAYS < max(1, WEBHOOKS_DISABLE_AFTER_DAYS):
    raise ImproperlyConfigured(
        "WEBHOOKS_DELIVERY_RETENTION_DAYS must be at least WEBHOOKS_DISABLE_AFTER_DAYS "
        f"({WEBHOOKS_DISABLE_AFTER_DAYS:g}) and 1"
    )
# Attempts one endpoint may have in flight at once, over every worker: a slow or
# unanswering customer holds at most this many workers, its other deliveries wait their
# turn (docs/webhooks.md, "Fairness"). Run more worker threads than this. Four: one
# busy customer's receiver answering in 200 ms still takes 20 deliveries a second.
WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT = whole_number("WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT", 4, least=1)
# Seconds before each attempt of a delivery (the first's ignored): Standard Webhooks'
# example, ten attempts over about three days. The soak (soak/) shortens it to seconds.
WEBHOOKS_RETRY_SCHEDULE = retry_schedule(
    env.str("WEBHOOKS_RETRY_SCHEDULE", default="0,5,300,1800,7200,18000,36000,50400,72000,86400")
)

# Post-call analysis (analysis/), on the organization's LLM key: the base URL sends every
# provider's requests to one OpenAI-compatible gateway (tests' stand-in) instead.
ANALYSIS_LLM_BASE_URL = env.str("ANALYSIS_LLM_BASE_URL", default="")
# A provider request gives up after this long (a last slow read adds as much); a run asks
# twice at most, within the 15 minutes after which it is taken for lost and asked again.
ANALYSIS_TIMEOUT_SECONDS = timeout("ANALYSIS_TIMEOUT_SECONDS", 60.0, most=180)
# Provider errors (429, 5xx, timeouts) retry with exponential backoff from this base,
# at most ANALYSIS_MAX_ATTEMPTS requests per run.
ANALYSIS_RETRY_BASE_SECONDS = duration("ANALYSIS_RETRY_BASE_SECONDS", 30.0, zero=True)
ANALYSIS_MAX_ATTEMPTS = whole_number("ANALYSIS_MAX_ATTEMPTS", 5, least=1)
# Analyses one organization may have asking its provider at once, over all workers: a
# slow provider holds at most this many workers, the organization's other analyses wait
# their turn (docs/reliability.md, "Fairness between organizations"). Four: an
# organization at its 100 open calls ends about one a second, each analysed in seconds.
ANALYSIS_ORGANIZATION_MAX_RUNNING = whole_number("ANALYSIS_ORGANIZATION_MAX_RUNNING", 4, least=1)

# Call recordings (recordings/; README "Recordings and privacy"): LiveKit Egress writes
# each as one OGG file to this bucket unless the organization set its own; with neither,
# nothing is recorded (logged). An empty endpoint is AWS (others path-style); empty
# credentials: boto3's and the egress service's own (an instance role).
RECORDINGS_S3_ENDPOINT = env.str("RECORDINGS_S3_ENDPOINT", default="")
RECORDINGS_S3_BUCKET = env.str("RECORDINGS_S3_BUCKET", default="")
RECORDINGS_S3_REGION = env.str("RECORDINGS_S3_REGION", default="us-east-1")
RECORDINGS_S3_ACCESS_KEY_ID = secret("RECORDINGS_S3_ACCESS_KEY_ID", "")
RECORDINGS_S3_SECRET_ACCESS_KEY = secret("RECORDINGS_S3_SECRET_ACCESS_KEY", "")
if bool(RECORDINGS_S3_ACCESS_KEY_ID) != bool(RECORDINGS_S3_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured(
        "Set both RECORDINGS_S3_ACCESS_KEY_ID and RECORDINGS_S3_SECRET_ACCESS_KEY, or neither."
    )
# How long a recording's presigned download URL works (API and admin), at most 15 minutes.
RECORDINGS_URL_TTL_SECONDS = whole_number("RECORDINGS_URL_TTL_SECONDS", 900, least=60, most=900)
# Every S3 request the server makes itself (deleting a recording) gives up after this.
RECORDINGS_S3_TIMEOUT_SECONDS = duration("RECORDINGS_S3_TIMEOUT_SECONDS", 10.0)

# X-Request-ID: taken from the client when it is a valid uuid, else generated;
# returned on every response and attached to every log record.
DJANGO_GUID = {
    "GUID_HEADER_NAME": "X-Request-ID",
    "VALIDATE_GUID": True,
    "RETURN_HEADER": True,
    "EXPOSE_HEADER": True,
    "UUID_FORMAT": "string",
}

LOGGING = logging_setting(
    log_format=env.str("LOG_FORMAT", default="json"), level=env.str("LOG_LEVEL", default="INFO")
)

# --- HTTPS and cookies (production: DEBUG off) ----------------------------------------
# Behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER_ENABLED=1 so Django trusts
# X-Forwarded-Proto; health checks stay reachable over plain HTTP.
if env.bool("SECURE_PROXY_SSL_HEADER_ENABLED", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# A scraper is not redirected either: it would only fail the scrape (its token already
# went out), where Prometheus scrapes each instance over the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^ops/metrics$"]
SECURE_HSTS_SECONDS = whole_number("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
# Messages wait for the next page in the session (the database), not in a cookie: the
# admin shows a new API key's plaintext in one, and a cookie is only signed.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
