"""The charge reconciliation task, run by beat every PAYMENTS_CHARGE_RECONCILE_INTERVAL
seconds (``payments.schedule``). Thin: it takes nothing and calls one service."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError, close_old_connections

from payments.reconciliation import charge_reconcile_stale
from payments.refund_reconciliation import refund_reconcile_stale

logger = logging.getLogger("payments")


@shared_task(
    name="payments.charge_reconcile", acks_late=True, soft_time_limit=240, time_limit=300, ignore_result=True
)
def charge_reconcile() -> dict:
    close_old_connections()
    try:
        report = charge_reconcile_stale()
        refunds = refund_reconcile_stale()
    except (OperationalError, InterfaceError):
        # The database went away mid-run: what was not settled is still stale next run.
        logger.warning("charge reconciliation could not reach the database", exc_info=True)
        return {}
    finally:
        close_old_connections()
    if report.noteworthy:
        logger.warning("charge reconciliation: %s", report.summary())
    elif report.rechecked:
        logger.info("charge reconciliation: %s", report.summary())
    return {**report.as_dict(), "refunds": refunds.as_dict()}
