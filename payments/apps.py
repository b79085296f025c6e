from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class PaymentsConfig(AppConfig):
    name = "payments"
    label = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from payments.gateways import check_gateway

        post_migrate.connect(_ensure_schedule, sender=self)
        # Deploy only, as the secret key's: offline commands (migrate) run without a gateway.
        checks.register(check_gateway, checks.Tags.security, deploy=True)


def _ensure_schedule(using: str = "default", **kwargs) -> None:
    from django.apps import apps
    from django.db import DEFAULT_DB_ALIAS

    # Beat's DatabaseScheduler reads the default database only.
    if using != DEFAULT_DB_ALIAS or not apps.is_installed("django_celery_beat"):
        return
    from payments.schedule import ensure_periodic_tasks

    ensure_periodic_tasks(using=using)
