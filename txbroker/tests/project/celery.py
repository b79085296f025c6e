"""The test project's Celery app: ``celery -A txbroker.tests.project worker``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "txbroker.tests.project.settings")

app = Celery("txbroker.tests.project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
