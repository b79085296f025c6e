"""The check-back and sweep periodic tasks, in django-celery-beat's tables.

They carry no expiry: Celery turns an expiry into an absolute time by the clock of the
host that publishes the task (beat), and a worker whose clock runs ahead would discard
every one of them as expired, so that nothing would be swept or checked. A backlog of
them after an outage costs one cheap query each.
"""

from __future__ import annotations

from django.db import transaction

from txbroker.conf import txsettings

CHECK_TASK_NAME = "txbroker: check-back pass"
SWEEP_TASK_NAME = "txbroker: delivery sweep"


def ensure_periodic_tasks(*, sync: bool = False, using: str = "default") -> list[str]:
    """Create the periodic tasks when missing (idempotent). With ``sync``, also reset their
    intervals to TXBROKER_CHECK_INTERVAL and TXBROKER_SWEEP_INTERVAL; without it an
    interval edited in the admin is kept."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    done = []
    specs = [
        (CHECK_TASK_NAME, "txbroker.check_pass", txsettings.CHECK_INTERVAL),
        (SWEEP_TASK_NAME, "txbroker.sweep", txsettings.SWEEP_INTERVAL),
    ]
    with transaction.atomic(using=using):
        for name, task, seconds in specs:
            every = max(1, round(seconds))
            schedule, _ = IntervalSchedule.objects.using(using).get_or_create(
                every=every, period=IntervalSchedule.SECONDS
            )
            existing = PeriodicTask.objects.using(using).filter(name=name).first()
            if existing is None:
                PeriodicTask.objects.using(using).create(
                    name=name,
                    task=task,
                    interval=schedule,
                    description="Created by txbroker; edit the interval here or set the "
                    "TXBROKER_* setting and run `manage.py txbroker_schedule --sync`.",
                )
                done.append(f"created {name} every {every}s")
            elif sync and (existing.interval_id != schedule.pk or not existing.enabled):
                existing.interval = schedule
                existing.expire_seconds = None
                existing.enabled = True
                existing.save()
                done.append(f"synced {name} to every {every}s")
            elif existing.expire_seconds is not None or existing.expires is not None:
                # Created with an expiry by an earlier version: see the module doc.
                PeriodicTask.objects.using(using).filter(pk=existing.pk).update(
                    expire_seconds=None, expires=None
                )
                done.append(f"removed the expiry of {name}")
    return done
