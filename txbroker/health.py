"""Health checks, for ``/healthz`` (txbroker.views): the databases (the default one and
txbroker's) and the Celery broker answer. :func:`backlog_problems` is txbroker's own
judgement (nothing waits too long), which a project built on django-health-check runs as
``txbroker.health_checks.Backlog``."""

from __future__ import annotations

import logging
from typing import Optional

from celery import current_app
from django.db import connections
from django.db.models import Min

from txbroker import dbtime
from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.models import Delivery, Message

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


def backlog_problems(now=None) -> list[str]:
    """What waits longer than it should: the oldest unordered delivery that has been due
    (PENDING or RETRY, its next attempt time passed) for more than
    ``TXBROKER_HEALTH_MAX_PENDING_AGE`` seconds (no worker takes it), and the oldest HALF
    message older than ``TXBROKER_HEALTH_MAX_HALF_AGE`` (no check-back settles it). Empty
    when all is well.

    Two index-only look-ups (the partial index on waiting deliveries, the state index), by
    the database's clock. The texts name a consumer group at most, never a host."""
    db = broker_db()
    now = now or dbtime.read(db)
    problems = []
    oldest_due: Optional[Delivery] = (
        Delivery.objects.using(db)
        # An ordered delivery may wait behind its message group's earlier one (or behind a
        # DEAD one, by design: the blocked groups page shows those), so only unordered ones.
        .filter(status__in=Delivery.WAITING, next_attempt_at__lte=now, message_group="")
        .order_by("next_attempt_at")
        .only("consumer_group", "next_attempt_at")
        .first()
    )
    limit = txsettings.HEALTH_MAX_PENDING_AGE
    if oldest_due is not None and (now - oldest_due.next_attempt_at).total_seconds() > limit:
        waited = (now - oldest_due.next_attempt_at).total_seconds()
        problems.append(
            f"a delivery of {oldest_due.consumer_group} has been due for {waited:.0f} s (limit {limit:g} s)"
        )
    oldest_half = (
        Message.objects.using(db)
        .filter(state=Message.State.HALF)
        .aggregate(oldest=Min("created_at"))["oldest"]
    )
    limit = txsettings.HEALTH_MAX_HALF_AGE
    if oldest_half is not None and (now - oldest_half).total_seconds() > limit:
        age = (now - oldest_half).total_seconds()
        problems.append(f"a HALF message has waited {age:.0f} s for its outcome (limit {limit:g} s)")
    return problems
