"""txbroker's checks for django-health-check (4.x), for projects that build their health
endpoint on it; txbroker itself needs no django-health-check (``txbroker.views.healthz_view``
is the plain one). Importing this module imports ``health_check``.

``Backlog``: :func:`txbroker.health.backlog_problems` (a delivery due too long, a HALF
message unsettled too long). ``CeleryBroker``: the broker accepts a connection. Their
messages name no host, port or URL: they may be shown to staff.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.db import connections
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from txbroker import health
from txbroker.db import broker_db


@dataclasses.dataclass
class Backlog(HealthCheck):
    """Nothing waits past ``TXBROKER_HEALTH_MAX_PENDING_AGE`` / ``..._MAX_HALF_AGE``."""

    safe_messages = True

    def run(self) -> None:
        try:
            problems = health.backlog_problems()
        finally:
            connections[broker_db()].close()  # run in an executor's thread: leave no connection
        if problems:
            raise ServiceUnavailable("; ".join(problems))


@dataclasses.dataclass
class CeleryBroker(HealthCheck):
    """Celery's broker accepts a connection within ``timeout``."""

    timeout: datetime.timedelta = dataclasses.field(default=datetime.timedelta(seconds=3), repr=False)
    safe_messages = True

    def run(self) -> None:
        try:
            health.check_celery_broker(timeout=self.timeout.total_seconds())
        except Exception as exc:  # any failure is the answer; its text names hosts
            raise ServiceUnavailable(f"cannot connect ({type(exc).__name__})") from exc
