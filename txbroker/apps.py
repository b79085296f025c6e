from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TxBrokerConfig(AppConfig):
    name = "txbroker"
    label = "txbroker"
    verbose_name = "Transactional messages"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        # The worker hooks; the tasks, known by name in every process (txbroker.wakeup
        # publishes the delivery task by its name).
        from txbroker import signals, tasks  # noqa: F401

        # Every process learns every checker and consumer.
        autodiscover_modules("checkers", "consumers")
        post_migrate.connect(_ensure_schedule, sender=self)
        # With TXBROKER_FAULTS set, every process says so (and what each point does) as it starts.
        from txbroker.faults import active_faults

        active_faults()


def _ensure_schedule(using: str = "default", **kwargs) -> None:
    from django.apps import apps
    from django.db import DEFAULT_DB_ALIAS

    # Beat's DatabaseScheduler reads the default database only.
    if using != DEFAULT_DB_ALIAS or not apps.is_installed("django_celery_beat"):
        return
    from txbroker.schedule import ensure_periodic_tasks

    ensure_periodic_tasks(using=using)
