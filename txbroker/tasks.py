"""Thin Celery tasks: a delivery batch, a check-back pass, a sweep.

A task is only a wake-up: it carries no delivery ids and claims whatever the database says
is due, so losing, duplicating or delaying tasks never loses or doubles a delivery.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import close_old_connections

from txbroker import checkback, delivery, wakeup

logger = logging.getLogger("txbroker.tasks")


@shared_task(
    name="txbroker.deliver",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=120,
    time_limit=150,
    ignore_result=True,
)
def deliver() -> dict:
    close_old_connections()
    # Before claiming: a commit from now on publishes a new wake-up (txbroker.wakeup).
    wakeup.started()
    try:
        report = delivery.deliver_due()
    finally:
        close_old_connections()
    if report.more_due:
        # The budget ran out with deliveries still due: hand over to a fresh task.
        wakeup.wake_deliveries(coalesce=False)
    return {"claimed": report.claimed, "succeeded": report.succeeded, "failed": report.failed}


@shared_task(
    name="txbroker.check_pass", acks_late=True, soft_time_limit=240, time_limit=300, ignore_result=True
)
def check_pass() -> dict:
    close_old_connections()
    try:
        return checkback.check_pass().as_dict()
    finally:
        close_old_connections()


@shared_task(name="txbroker.sweep", acks_late=True, soft_time_limit=60, time_limit=90, ignore_result=True)
def sweep() -> dict:
    close_old_connections()
    try:
        report = delivery.sweep()
    finally:
        close_old_connections()
    return {"reclaimed": report.reclaimed, "due": report.due, "enqueued": report.enqueued}
