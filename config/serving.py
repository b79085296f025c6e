"""What a serving process (gunicorn, runserver, an ASGI server) needs before it starts."""

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
