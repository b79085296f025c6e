"""Loaded by pytest with ``-p config.pytest_env`` (pyproject.toml), before pytest-django
reads the settings: the suite's defaults are PostgreSQL and Redis on this machine, and the
test support app. Anything already in the environment wins."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/txbroker")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret")
os.environ.setdefault("DJANGO_EXTRA_APPS", "txbroker.tests.support,harness")
os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
# Throttling and the login lockout have their own tests (which lower the limits); the rest of
# the suite, whose requests all come from 127.0.0.1, is neither throttled nor locked out.
os.environ.setdefault("DJANGO_THROTTLE_AUTH_TOKEN_RATE", "100000/minute")
os.environ.setdefault("DJANGO_THROTTLE_ORDERS_RATE", "100000/minute")
os.environ.setdefault("DJANGO_THROTTLE_PAYMENTS_RATE", "100000/minute")
os.environ.setdefault("DJANGO_LOGIN_FAILURE_LIMIT", "100000")
os.environ.setdefault("DJANGO_THROTTLE_PHONE_CODE_RATE", "100000/minute")
# The suite runs with DEBUG off on the simulated gateway and SMS backends, knowingly.
os.environ.setdefault("PAYMENTS_ALLOW_SIMULATED_GATEWAY", "1")
os.environ.setdefault("NOTIFICATIONS_ALLOW_CONSOLE_SMS", "1")
# A second database, for the test that keeps txbroker's tables on their own alias.
os.environ.setdefault("TXBROKER_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/txbroker_alias")
