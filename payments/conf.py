"""The payments app's settings, each default written once, here.

``config.settings`` maps the environment's PAYMENTS_* variables onto Django settings of the
same name, with these defaults; the app reads them with ``setting`` (or ``seconds``), so a
project that leaves one out of its settings gets the same default. No Django import at the
top: the settings module reads ``DEFAULTS``.
"""

from __future__ import annotations

from typing import Any

# A float is a number of seconds (>= 0).
DEFAULTS: dict[str, Any] = {
    # The payment gateway, pluggable like EMAIL_BACKEND.
    "PAYMENTS_GATEWAY_BACKEND": "payments.gateways.SimulatedGateway",
    # The simulated gateway approves any amount: with DEBUG off, web, worker and beat refuse
    # to start with it (and `check --deploy` reports an Error) unless this says the operator
    # chose it knowingly (tests, chaos and bench runs).
    "PAYMENTS_ALLOW_SIMULATED_GATEWAY": False,
    # Seconds a duplicate payment request waits for the one holding the order's charge.
    "PAYMENTS_IN_PROGRESS_WAIT": 10.0,
    # Charge reconciliation (payments.reconciliation.charge_reconcile_stale, a beat task): a
    # charge left PENDING or APPROVED longer than RECONCILE_AFTER seconds (database time)
    # belongs to a payment whose process died; it is settled with the gateway. A charge the
    # gateway does not know is closed only once older than PAYMENTS_GATEWAY_TIMEOUT; keep
    # RECONCILE_AFTER above the usual gateway call, or reconciliation asks about live
    # payments for nothing.
    "PAYMENTS_CHARGE_RECONCILE_AFTER": 60.0,
    "PAYMENTS_CHARGE_RECONCILE_INTERVAL": 30.0,
    "PAYMENTS_CHARGE_RECONCILE_BATCH_SIZE": 50,
    # How long a payment keeps trying to record itself after losing its database session (a
    # cut connection, a server restart); below TXBROKER_TRANSACTION_TIMEOUT (6 s by default).
    "PAYMENTS_RECORD_RETRY_SECONDS": 3.0,
    # The longest a gateway call may take (payments.gateways.gateway_timeout): backends give
    # up after it (their client-side timeout), and reconciliation closes a charge the gateway
    # does not know only once it is older than this (younger, the call may be in flight).
    "PAYMENTS_GATEWAY_TIMEOUT": 30.0,
    # How long reconciliation keeps asking the gateway about charges closed without its
    # answer (not found, or a timed-out call): an approval found meanwhile makes them
    # ABANDONED (to refund).
    "PAYMENTS_CHARGE_RECHECK_WINDOW": 86400.0,
    # Seconds each call to the simulated gateway takes (tests and demos of slow gateways).
    "PAYMENTS_SIMULATED_GATEWAY_LATENCY": 0.0,
}


def setting(name: str) -> Any:
    """The Django setting ``name``, or its default here."""
    from django.conf import settings

    return getattr(settings, name, DEFAULTS[name])


def seconds(name: str) -> float:
    return float(setting(name))
