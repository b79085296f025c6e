from django.apps import AppConfig


class HarnessConfig(AppConfig):
    """Chaos and benchmark tooling, and the naive baseline they compare txbroker with.

    Not part of the product's code path: installed with ``DJANGO_EXTRA_APPS=harness`` by the
    chaos and bench commands' child processes and by the tests.
    """

    name = "harness"
    label = "harness"
    verbose_name = "Chaos and benchmark harness"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Only in the Celery workers the bench starts (they carry its environment).
        from harness.bench.hooks import install_worker_hooks

        install_worker_hooks()
