from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself as an app: its commands that span the domain apps (``demo``).

    No models. Installed in every settings module (``config.settings.base``), so
    ``manage.py demo`` works wherever ``make run`` does."""

    name = "config"
    label = "config"
    verbose_name = "Order-payment project"
