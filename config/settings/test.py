"""The test suite's settings: production's (DEBUG off, as in production) with the suite's
own policy, each still overridable from the environment as in production (a test that
starts gunicorn with a low rate, say). pytest loads them (pyproject.toml), and so do the
worker and beat processes tests start (``txbroker/tests/processes.py``).

The services' addresses and the test-only apps come from the environment that
``config/pytest_env.py`` fills in, so child processes find the same ones."""

from __future__ import annotations

from config.settings import *  # noqa: F403
from config.settings.base import LOGGING, REST_FRAMEWORK, env

# Throttling and the login lockout have their own tests (which lower the limits); the rest
# of the suite, whose requests all come from 127.0.0.1, is neither throttled nor locked out.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {
        scope: env.str(f"DJANGO_THROTTLE_{scope.upper()}_RATE", default="100000/minute")
        for scope in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    },
}
LOGIN_FAILURE_LIMIT = AXES_FAILURE_LIMIT = env.int("DJANGO_LOGIN_FAILURE_LIMIT", default=100000)
# The suite runs with DEBUG off on the simulated gateway and SMS backends, knowingly.
PAYMENTS_ALLOW_SIMULATED_GATEWAY = env.bool("PAYMENTS_ALLOW_SIMULATED_GATEWAY", default=True)
NOTIFICATIONS_ALLOW_CONSOLE_SMS = env.bool("NOTIFICATIONS_ALLOW_CONSOLE_SMS", default=True)
# Quiet unless something is wrong.
LOGGING = {**LOGGING, "root": {**LOGGING["root"], "level": env.str("DJANGO_LOG_LEVEL", default="WARNING")}}
# The Celery app (``celery -A``) of the worker and beat processes txbroker's tests start.
TXBROKER_TESTS_CELERY_APP = "config"
