"""The Celery app: ``celery -A config worker`` and ``celery -A config beat``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _filesystem_queue_folders(sender: Celery, **kwargs) -> None:
    """The embedded mode's filesystem transport needs its folders; made here, by the first
    process that publishes or consumes, rather than when settings are imported."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_format(logger, **kwargs) -> None:
    """DJANGO_LOG_FORMAT=json applies to the worker's and beat's own handlers too."""
    from django.conf import settings

    if getattr(settings, "LOG_FORMAT", "plain") == "json":
        from config.logs import use_json_format

        use_json_format(logger)


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_simulations(**kwargs) -> None:
    """A worker or beat started with a refused simulation (``config.serving``) exits at once.

    SystemExit, not ImproperlyConfigured: Celery logs and ignores a receiver's Exception.
    """
    from django.core.exceptions import ImproperlyConfigured

    from config.embedded import prepare
    from config.serving import refuse_simulations

    prepare()
    try:
        refuse_simulations()
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"ImproperlyConfigured: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(1) from exc
