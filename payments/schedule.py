"""The charge reconciliation periodic task, in django-celery-beat's tables.

No expiry: Celery makes it an absolute time by beat's clock, and a worker whose clock runs
ahead would discard every run (txbroker.schedule says more).
"""

from __future__ import annotations

from django.db import transaction

from payments import conf

RECONCILE_TASK_NAME = "payments: charge reconciliation"


def ensure_periodic_tasks(*, sync: bool = False, using: str = "default") -> list[str]:
    """Create the reconciliation periodic task when missing (idempotent). With ``sync``,
    also reset its interval to PAYMENTS_CHARGE_RECONCILE_INTERVAL; without it an interval
    edited in the admin is kept."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = max(1, round(conf.seconds("PAYMENTS_CHARGE_RECONCILE_INTERVAL")))
    with transaction.atomic(using=using):
        schedule, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=every, period=IntervalSchedule.SECONDS
        )
        existing = PeriodicTask.objects.using(using).filter(name=RECONCILE_TASK_NAME).first()
        if existing is None:
            PeriodicTask.objects.using(using).create(
                name=RECONCILE_TASK_NAME,
                task="payments.charge_reconcile",
                interval=schedule,
                description="Created by the payments app: settles charges left PENDING/APPROVED "
                "by a payment whose process died. Edit the interval here; "
                "PAYMENTS_CHARGE_RECONCILE_INTERVAL applies when the task is created.",
            )
            return [f"created {RECONCILE_TASK_NAME} every {every}s"]
        if sync and (existing.interval_id != schedule.pk or not existing.enabled):
            existing.interval = schedule
            existing.expire_seconds = None
            existing.enabled = True
            existing.save()
            return [f"synced {RECONCILE_TASK_NAME} to every {every}s"]
        if existing.expire_seconds is not None or existing.expires is not None:
            PeriodicTask.objects.using(using).filter(pk=existing.pk).update(expire_seconds=None, expires=None)
            return [f"removed the expiry of {RECONCILE_TASK_NAME}"]
    return []
