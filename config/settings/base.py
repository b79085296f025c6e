"""The settings every process shares, 12-factor: everything that differs between machines
comes from the environment, read here with django-environ (and nowhere else: apps read
Django settings only).

With no environment at all the project runs on embedded defaults with no server:
SQLite (WAL, busy timeout, IMMEDIATE transactions) and Celery's filesystem transport in
``var/``. ``DATABASE_URL=postgres://...`` and ``CELERY_BROKER_URL=redis://...`` switch the
same code to PostgreSQL and Redis. ``config.settings`` adds the production hardening unless
``DJANGO_DEBUG`` is on; ``config.settings.test`` is the test suite's.

Nothing here touches the disk: folders are made by the processes that need them
(``config.celery`` for the filesystem queue, ``collectstatic`` for static files).
"""

from __future__ import annotations

from datetime import timedelta

from config.settings.environment import BASE_DIR, VAR_DIR, env, env_seconds

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
# No default key outside DEBUG. The key is required where it is used: serving refuses to
# start (config/serving.py, called by wsgi.py and asgi.py), `check --deploy` fails, and
# Django refuses to sign anything with an empty key. Offline commands (migrate,
# makemigrations) and Celery workers, which sign nothing, run without it.
SECRET_KEY_MISSING = not SECRET_KEY and not DEBUG
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "django_celery_beat",
    "txbroker",
    "orders",
    "payments",
    "points",
    "notifications",
    # The project's own commands that span the apps above (``manage.py demo``).
    "config",
    # Extra apps from the environment: the test suite adds its support app this way, so
    # that worker processes it starts register the test consumers too.
    *env.list("DJANGO_EXTRA_APPS", default=[]),
]

MIDDLEWARE = [
    # First: a body declared larger than DATA_UPLOAD_MAX_MEMORY_SIZE is refused unread.
    "config.middleware.RequestBodyLimit",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: turns an admin login refused by the lockout into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"

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

WSGI_APPLICATION = "config.wsgi.application"

# --- Databases ----------------------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {
    "default": {
        **env.db_url("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}"),
        "CONN_MAX_AGE": env.int("DJANGO_CONN_MAX_AGE", default=60),
        "CONN_HEALTH_CHECKS": True,
    }
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share one file: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock at BEGIN (no lock-upgrade deadlocks) and the
    # busy timeout makes a writer wait instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}

# txbroker's tables may live on their own alias, as a real broker would.
if env.str("TXBROKER_DATABASE_URL", default=""):
    DATABASES["txbroker"] = {**env.db_url("TXBROKER_DATABASE_URL"), "CONN_HEALTH_CHECKS": True}

# The bench's peers (``harness.peers``, ``manage.py bench --designs celery_outbox,procrastinate``):
# installed with the harness only, so that the product never depends on them, and only on
# PostgreSQL (procrastinate's migrations are PostgreSQL's SQL; the outbox relay needs
# SKIP LOCKED).
if "harness" in INSTALLED_APPS and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS += ["django_celery_outbox", "procrastinate.contrib.django"]
CELERY_OUTBOX_APP = "harness.peers.outbox.app"
# Its StatsD metrics (on by default, to localhost:9125): this project exports Prometheus
# metrics and runs no StatsD agent, so every metric would be a refused packet and a warning.
MONITORING_METRICS_ENABLED = False
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = ""  # the harness's tasks.py are Celery's
PROCRASTINATE_IMPORT_PATHS = ["harness.peers.jobs"]


# Bounded waits on PostgreSQL, for every connection of web, worker and beat: a process that
# freezes (SIGSTOP, a paused VM or container) or dies while its session holds a transaction
# loses that session after DATABASE_IDLE_IN_TRANSACTION_TIMEOUT, and with it its locks; no
# statement runs longer than DATABASE_STATEMENT_TIMEOUT, no lock wait lasts longer than
# DATABASE_LOCK_TIMEOUT; TCP keepalives and client_connection_check_interval let the
# server notice a client host that vanished. 0 disables one. Startup options: behind
# pgbouncer (transaction pooling) set them on the database role instead
# (ALTER ROLE ... SET ...), since pgbouncer refuses unknown startup parameters.
DATABASE_STATEMENT_TIMEOUT = env_seconds("DATABASE_STATEMENT_TIMEOUT", 30)
DATABASE_LOCK_TIMEOUT = env_seconds("DATABASE_LOCK_TIMEOUT", 10)
DATABASE_IDLE_IN_TRANSACTION_TIMEOUT = env_seconds("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", 20)
DATABASE_KEEPALIVES_IDLE = env_seconds("DATABASE_KEEPALIVES_IDLE", 10)
DATABASE_CLIENT_CHECK_INTERVAL = env_seconds("DATABASE_CLIENT_CHECK_INTERVAL", 5)
DATABASE_CONNECT_TIMEOUT = env_seconds("DATABASE_CONNECT_TIMEOUT", 5)


def postgresql_bounds() -> dict[str, object]:
    """libpq connection parameters applying the bounds above."""
    server = {
        "statement_timeout": DATABASE_STATEMENT_TIMEOUT,
        "lock_timeout": DATABASE_LOCK_TIMEOUT,
        "idle_in_transaction_session_timeout": DATABASE_IDLE_IN_TRANSACTION_TIMEOUT,
        "client_connection_check_interval": DATABASE_CLIENT_CHECK_INTERVAL,
    }
    options = " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in server.items())
    keepalive = max(1, round(DATABASE_KEEPALIVES_IDLE))
    options += f" -c tcp_keepalives_idle={keepalive} -c tcp_keepalives_interval={keepalive}"
    return {
        "options": options,
        "connect_timeout": max(1, round(DATABASE_CONNECT_TIMEOUT)),
        # The client side: a server host that vanished is noticed as quickly.
        "keepalives": 1,
        "keepalives_idle": keepalive,
        "keepalives_interval": keepalive,
        "keepalives_count": 3,
    }


for _database in DATABASES.values():
    if _database["ENGINE"] == "django.db.backends.postgresql":
        _database.setdefault("OPTIONS", {}).update(postgresql_bounds())
DATABASE_ROUTERS = ["txbroker.routers.TxBrokerRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static -------------------------------------------------------------------
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
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "/admin/login/"

# --- Clients behind proxies -----------------------------------------------------------------
# How many reverse proxies in front of Django append to X-Forwarded-For and set
# X-Forwarded-Proto. 0 (the default): none, a client's address is the socket's REMOTE_ADDR
# and every forwarded header is the client's own word, ignored. N: the N-th address from
# the right of X-Forwarded-For is the client (config.client_ip), for every throttle and the
# login lockout alike, and X-Forwarded-Proto says whether the client used HTTPS.
NUM_PROXIES = env.int("DJANGO_NUM_PROXIES", default=0)
if NUM_PROXIES < 0:
    raise ValueError(f"DJANGO_NUM_PROXIES must be 0 or more, not {NUM_PROXIES}")

# --- Logins: failed attempts lock out an address and a username (django-axes) --------------
# Both the API's token endpoint and the admin's login form authenticate through Django's
# authenticate(), which axes watches. After LOGIN_FAILURE_LIMIT failures from one address, or
# for one username from anywhere, within LOGIN_COOLOFF seconds, logins from that address or
# for that username are refused (API: 429 JSON; admin: the 429 lockout page) even with the
# right password, until the cool-off ends or an operator lifts it (admin "Access attempts",
# or `manage.py axes_reset_ip ADDRESS` / `axes_reset_username NAME` / `axes_reset`). Attempts
# are kept in the database, so a cache (Redis) outage does not lift a lockout.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURE_LIMIT = env.int("DJANGO_LOGIN_FAILURE_LIMIT", default=5)
LOGIN_COOLOFF = env_seconds("DJANGO_LOGIN_COOLOFF_SECONDS", 900)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_COOLOFF)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # either one locks
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip"
AXES_LOCKOUT_CALLABLE = "config.logins.lockout_response"
# An attempt while locked out does not restart the cool-off: it ends when announced.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success never clears failures: an attacker's own account must not reset the address's count.
AXES_RESET_ON_SUCCESS = False
AXES_VERBOSE = False

# --- API tokens ------------------------------------------------------------------------------
# A token (rest_framework.authtoken's, one per user) expires TOKEN_TTL seconds after it was
# issued; POST /api/auth/token/ then issues a new one, POST /api/auth/token/revoke/ ends it
# early, and an operator can delete it in the admin (Auth Token > Tokens).
TOKEN_TTL = env_seconds("DJANGO_TOKEN_TTL", 86400)
if not TOKEN_TTL:
    raise ValueError("DJANGO_TOKEN_TTL must be a number of seconds > 0")

# --- REST framework ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.tokens.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON request bodies only: what the schema documents (a form's "0" is not a boolean).
    "DEFAULT_PARSER_CLASSES": ["config.api.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.api.ContentNegotiation",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Documents the generic answers (400, 401, 403, 406, 415, 429) where they can occur.
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "config.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # Only views with a ``throttle_scope`` are throttled: the token endpoint (per client
    # address), order creation and payments (per user), and the phone endpoint's PUT (per
    # user: it sends an SMS). Counters live in the cache below (Redis when there is one, so
    # every process shares them).
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "auth_token": env.str("DJANGO_THROTTLE_AUTH_TOKEN_RATE", default="20/minute"),
        "orders": env.str("DJANGO_THROTTLE_ORDERS_RATE", default="60/minute"),
        "payments": env.str("DJANGO_THROTTLE_PAYMENTS_RATE", default="120/minute"),
        # Verification codes sent by PUT /api/notifications/phone/, per user.
        "phone_code": env.str("DJANGO_THROTTLE_PHONE_CODE_RATE", default="5/hour"),
    },
    # DRF's own rule for a client's address; config.client_ip applies the same one.
    "NUM_PROXIES": NUM_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "txbroker order-payment API",
    "DESCRIPTION": "Orders, payments, points and notifications on RocketMQ-style "
    "transactional messages, and the broker's operator API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from this site's static files (drf-spectacular-sidecar): the docs
    # work offline and load nothing from a CDN, which the Content-Security-Policy forbids.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Content-Security-Policy (django-csp) ---------------------------------------------------
# Scripts only from this site's static files: the admin has no inline script, Swagger UI's
# start-up script is served as a file (config.urls uses drf-spectacular's split view), ReDoc
# is started by its own bundle. Inline styles stay allowed: the admin, Swagger UI, ReDoc and
# the dashboard's SVG charts use style attributes, which no nonce or hash can cover.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        # ReDoc runs its search in a worker made from a blob: URL.
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Celery ----------------------------------------------------------------------------------
# The broker's URL and the settings that depend on the broker: config/settings/broker.py.
from config.settings.broker import *  # noqa: E402, F403
from config.settings.broker import CELERY_BROKER_URL  # noqa: E402

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: a new PostgreSQL backend (fork, auth, SET TIME ZONE) per task, most of a
# short task's cost (see the bench). Reuse the connection across 500 tasks instead; Django's
# CONN_MAX_AGE and health checks still retire old or broken ones (txbroker's tasks call
# close_old_connections, as a request would).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=500)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Seconds /healthz waits for a Celery worker to answer its ping (config.health).
HEALTH_CELERY_PING_TIMEOUT = env.float("HEALTH_CELERY_PING_TIMEOUT", default=1.0)
CELERY_TIMEZONE = TIME_ZONE

# --- Cache (the API's throttling counters) ---------------------------------------------------
# Shared by every web process, so a limit holds across gunicorn workers: Redis (REDIS_URL, or
# the Celery broker's Redis). Without Redis (the embedded defaults) a per-process locmem cache:
# each process then counts on its own, which is fine for one local process only.
CACHE_REDIS_URL = env.str("REDIS_URL", default="") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
if CACHE_REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_REDIS_URL,
            "KEY_PREFIX": "txbroker-cache",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Request bodies: every API body is a few hundred bytes; refuse big ones early (400).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=256 * 1024)

# --- Logging -----------------------------------------------------------------------------------
# DJANGO_LOG_FORMAT: "plain" (a line of text per record) or "json" (one JSON object per line,
# python-json-logger: extra fields such as txbroker's msg_id, topic, consumer_group and
# attempt, and the traceback as exc_info). Celery's worker and beat use the same format
# (config/celery.py). config.logs.QuietPeriodicPasses: the periodic passes' routine records
# at DEBUG.
LOG_FORMAT = env.str("DJANGO_LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ValueError(f'DJANGO_LOG_FORMAT must be "plain" or "json", not {LOG_FORMAT!r}')
PERIODIC_TASKS = ["txbroker.sweep", "txbroker.check_pass", "txbroker.deliver", "payments.charge_reconcile"]
_quiet = {"filters": ["quiet_periodic_passes"]}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "quiet_periodic_passes": {"()": "config.logs.QuietPeriodicPasses", "tasks": PERIODIC_TASKS},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "config.logs.json_formatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler (DEBUG only) printed every 4xx and 5xx a second time,
        # unformatted: records of "django" go to the root's handler only. (Its other
        # handler mails ADMINS, which this project leaves empty.)
        "django": {"handlers": [], "propagate": True},
        "celery.beat": _quiet,
        "celery.worker.strategy": _quiet,
        "celery.app.trace": _quiet,
    },
}

# --- Order-payment apps and txbroker: their settings from the environment --------------------
from config.settings.domain import *  # noqa: E402, F403

# --- Operator endpoints -------------------------------------------------------------------------
# /metrics answers loopback clients only; with a token set, it answers whoever sends
# `Authorization: Bearer <token>` instead (and nobody without it).
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")
