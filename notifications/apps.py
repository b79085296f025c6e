from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class NotificationsConfig(AppConfig):
    name = "notifications"
    label = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifications.backends import check_sms_backend

        # Deploy only, as the secret key's: offline commands (migrate) run without a provider.
        checks.register(check_sms_backend, checks.Tags.security, deploy=True)
