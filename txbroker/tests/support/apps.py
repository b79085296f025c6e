from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "txbroker.tests.support"
    label = "txbroker_support"
    default_auto_field = "django.db.models.BigAutoField"
