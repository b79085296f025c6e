"""The notifications app's settings, each default written once, here (see
``payments.conf``: ``config.settings`` maps the environment onto these names). The SMS file
path's default depends on the project's var folder, so the project's settings own it."""

from __future__ import annotations

from typing import Any

# A float is a number of seconds (>= 0).
DEFAULTS: dict[str, Any] = {
    # The SMS provider, pluggable like EMAIL_BACKEND.
    "NOTIFICATIONS_SMS_BACKEND": "notifications.backends.ConsoleSmsBackend",
    # The simulated SMS backends (console, file, in-memory) send nothing: with DEBUG off,
    # processes refuse to start with one unless this says it was chosen knowingly.
    "NOTIFICATIONS_ALLOW_CONSOLE_SMS": False,
    # Phone verification: a code sent to a newly set number lasts this long and takes this
    # many wrong guesses before it is spent (set the number again for a new one).
    "NOTIFICATIONS_PHONE_CODE_TTL": 600.0,
    "NOTIFICATIONS_PHONE_CODE_MAX_ATTEMPTS": 5,
}


def setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name, DEFAULTS[name])
