"""Health checks, for ``/healthz`` (txbroker.views): the databases (the default one and
txbroker's) and the Celery broker answer."""

from __future__ import annotations

import logging

from celery import current_app
from django.db import connections

from txbroker.db import broker_db

logger = logging.getLogger("txbroker.metrics")


def check_databases() -> None:
    for alias in dict.fromkeys(["default", broker_db()]):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")


def check_celery_broker(timeout: float = 3.0) -> None:
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


HEALTH_CHECKS = (("database", check_databases), ("celery_broker", check_celery_broker))


def run_checks() -> tuple[dict[str, str], list[str]]:
    """Each check's result (``"ok"`` or ``"error: <exception class>"``) and the failing
    ones. Error texts, which name hosts, ports, databases and roles, go to the log only."""
    checks: dict[str, str] = {}
    failing = []
    for name, check in HEALTH_CHECKS:
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            logger.warning("health check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}"
            failing.append(name)
    return checks, failing
