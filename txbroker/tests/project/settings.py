"""Settings of txbroker's own test project (``pytest -c txbroker/tests/pytest.ini``, or
``--ds=txbroker.tests.project.settings``).

The services come from the environment, as the tests' child processes get them
(``txbroker/tests/processes.py``): ``DATABASE_URL`` (PostgreSQL), ``TXBROKER_DATABASE_URL``
(a second database, for the tests that keep txbroker's tables on their own alias) and
``CELERY_BROKER_URL`` (Redis). Every ``TXBROKER_*`` variable becomes the Django setting of
the same name, so that tests can shorten the intervals of the processes they start, and the
``DATABASE_*`` bounds below reach them the same way."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/txbroker")
TXBROKER_DATABASE_URL = os.environ.get(
    "TXBROKER_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/txbroker_alias"
)
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

SECRET_KEY = "txbroker-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
BASE_DIR = Path(__file__).resolve().parent

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
    "django_celery_beat",
    "txbroker",
    "txbroker.tests.support",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "txbroker.tests.project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/admin/login/"


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _postgresql(url: str) -> dict:
    """A ``postgres://user:password@host:port/name`` URL as a Django database, with the same
    bounded waits the project sets (tests shorten them for the processes they start)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"txbroker's tests run on PostgreSQL: {url!r} is not a postgres:// URL")
    server = {
        "statement_timeout": _seconds("DATABASE_STATEMENT_TIMEOUT", 30),
        "lock_timeout": _seconds("DATABASE_LOCK_TIMEOUT", 10),
        "idle_in_transaction_session_timeout": _seconds("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", 20),
        "client_connection_check_interval": _seconds("DATABASE_CLIENT_CHECK_INTERVAL", 5),
    }
    options = " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in server.items())
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": parts.port or "",
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"options": options, "connect_timeout": 5},
    }


DATABASES = {"default": _postgresql(DATABASE_URL)}
if TXBROKER_DATABASE_URL:
    DATABASES["txbroker"] = {**_postgresql(TXBROKER_DATABASE_URL), "CONN_MAX_AGE": 0}
DATABASE_ROUTERS = ["txbroker.routers.TxBrokerRouter"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

# As the project runs Celery: tasks are wake-ups acknowledged late, one at a time; on
# RabbitMQ with publisher confirms, and the queue and control exchange named by CELERY_QUEUE
# (a test run's own on a shared virtual host).
if CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    CELERY_BROKER_HEARTBEAT = 30
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_TASK_DEFAULT_QUEUE = CELERY_CONTROL_EXCHANGE = os.environ.get("CELERY_QUEUE", "celery")
CELERY_EVENT_EXCHANGE = f"{CELERY_TASK_DEFAULT_QUEUE}ev"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_DB_REUSE_MAX = 500
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
}

# The Celery app worker and beat processes started by the tests load (``celery -A``).
TXBROKER_TESTS_CELERY_APP = "txbroker.tests.project"

# The environment's TXBROKER_* variables, as the project maps them.
for _name, _value in os.environ.items():
    if _name.startswith("TXBROKER_") and _name not in {"TXBROKER_DATABASE_URL", "TXBROKER_TESTS_CELERY_APP"}:
        globals()[_name] = _value
