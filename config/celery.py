"""The Celery app: ``celery -A config worker`` and ``celery -A config beat``."""

from __future__ import annotations

import os
import sys

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_simulations(**kwargs) -> None:
    """A worker or beat started with a refused simulation (``config.serving``) exits at once.

    SystemExit, not ImproperlyConfigured: Celery logs and ignores a receiver's Exception.
    """
    from django.core.exceptions import ImproperlyConfigured

    from config.serving import refuse_simulations

    try:
        refuse_simulations()
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"ImproperlyConfigured: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(1) from exc
