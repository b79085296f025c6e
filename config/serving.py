"""What a serving process (gunicorn, runserver, an ASGI server) needs before it starts, and
what every long-running process (web, Celery worker and beat) refuses to start with."""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

MISSING_SIGNING_KEY_ERROR = (
    "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off "
    "(for local use: DJANGO_DEBUG=1, which `make run` sets)."
)


def require_secret_key() -> None:
    if getattr(settings, "SECRET_KEY_MISSING", False):
        raise ImproperlyConfigured(MISSING_SIGNING_KEY_ERROR)


@checks.register(checks.Tags.security, deploy=True)
def check_secret_key_set(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if getattr(settings, "SECRET_KEY_MISSING", False):
        return [checks.Error(MISSING_SIGNING_KEY_ERROR, id="config.E001")]
    return []


PER_PROCESS_CACHE_WARNING = (
    "The cache is a per-process memory cache (no REDIS_URL, and the Celery broker is not "
    "Redis): each web process counts the API's throttles and login failures on its own, so "
    "every limit is multiplied by the number of web processes. Set REDIS_URL."
)


@checks.register(checks.Tags.security, deploy=True)
def check_shared_cache(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend.endswith("LocMemCache") and not settings.DEBUG:
        return [checks.Warning(PER_PROCESS_CACHE_WARNING, id="config.W002")]
    return []


def simulation_refusals() -> list[str]:
    """Why the configured payment gateway or SMS backend may not run here: a simulation with
    DEBUG off and without its PAYMENTS_ALLOW_SIMULATED_GATEWAY / NOTIFICATIONS_ALLOW_CONSOLE_SMS."""
    from notifications.backends import simulated_sms_refusal
    from payments.gateways import simulated_gateway_refusal

    return [refusal for refusal in (simulated_gateway_refusal(), simulated_sms_refusal()) if refusal]


def refuse_simulations() -> None:
    """Raise ImproperlyConfigured when :func:`simulation_refusals` names anything: called
    at start-up by the web entry points (wsgi.py, asgi.py) and Celery's worker and beat."""
    refusals = simulation_refusals()
    if refusals:
        raise ImproperlyConfigured(" ".join(refusals))


def prepare_to_serve() -> None:
    """What the WSGI and ASGI applications do once the settings are loaded: refuse to serve
    without a secret key or with a simulation nobody allowed, and make the var folder."""
    from config.embedded import prepare

    require_secret_key()
    refuse_simulations()
    prepare()
