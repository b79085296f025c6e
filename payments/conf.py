"""The payments app's settings, each default written once, here.

``config.settings`` maps the environment's PAYMENTS_* variables onto Django settings of the
same name, with these defaults; the app reads them through the functions below, so a
project that leaves one out of its settings gets the same default. No Django import at the
top: the settings module reads ``DEFAULTS``.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "PAYMENTS_GATEWAY_BACKEND": "payments.gateways.SimulatedGateway",
    "PAYMENTS_ALLOW_SIMULATED_GATEWAY": False,
    "PAYMENTS_IN_PROGRESS_WAIT": 10.0,
    "PAYMENTS_CHARGE_RECONCILE_AFTER": 60.0,
    "PAYMENTS_CHARGE_RECONCILE_INTERVAL": 30.0,
    "PAYMENTS_CHARGE_RECONCILE_BATCH_SIZE": 50,
    "PAYMENTS_RECORD_RETRY_SECONDS": 3.0,
    "PAYMENTS_GATEWAY_TIMEOUT": 30.0,
    "PAYMENTS_CHARGE_RECHECK_WINDOW": 86400.0,
    "PAYMENTS_SIMULATED_GATEWAY_LATENCY": 0.0,
}


def setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name, DEFAULTS[name])


def gateway_backend() -> str:
    return setting("PAYMENTS_GATEWAY_BACKEND")


def simulated_gateway_allowed() -> bool:
    return bool(setting("PAYMENTS_ALLOW_SIMULATED_GATEWAY"))


def in_progress_wait() -> float:
    """Seconds a duplicate payment request waits for the one holding the order's charge."""
    return float(setting("PAYMENTS_IN_PROGRESS_WAIT"))


def charge_reconcile_after() -> float:
    """Seconds after which a PENDING or APPROVED charge is settled by reconciliation."""
    return float(setting("PAYMENTS_CHARGE_RECONCILE_AFTER"))


def charge_reconcile_interval() -> float:
    return float(setting("PAYMENTS_CHARGE_RECONCILE_INTERVAL"))


def charge_reconcile_batch_size() -> int:
    return int(setting("PAYMENTS_CHARGE_RECONCILE_BATCH_SIZE"))


def record_retry_seconds() -> float:
    return float(setting("PAYMENTS_RECORD_RETRY_SECONDS"))


def gateway_timeout() -> float:
    return float(setting("PAYMENTS_GATEWAY_TIMEOUT"))


def charge_recheck_window() -> float:
    """Seconds after closing a charge without the gateway's answer that reconciliation
    keeps asking the gateway about it."""
    return float(setting("PAYMENTS_CHARGE_RECHECK_WINDOW"))


def simulated_gateway_latency() -> float:
    return float(setting("PAYMENTS_SIMULATED_GATEWAY_LATENCY"))
