"""The orders app's settings, each default written once, here (see ``payments.conf``:
``config.settings`` maps the environment onto these names). No Django import at the top:
the settings module reads ``DEFAULTS``."""

from __future__ import annotations

from typing import Any

# A float is a number of seconds (>= 0).
DEFAULTS: dict[str, Any] = {
    # An order still CREATED (and held by no payment) this long after its creation is
    # CANCELLED by its payment timer, a delayed message sent with the order
    # (``orders.payment_timeout``); a later payment answers 409.
    "ORDERS_PAYMENT_TIMEOUT": 1800.0,
}


def setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name, DEFAULTS[name])


def seconds(name: str) -> float:
    return float(setting(name))
