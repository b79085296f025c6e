"""``/healthz``, built on django-health-check: the databases, the cache, every migration
applied, the Celery broker reachable and a worker answering a ping, and txbroker's own
backlog check (``txbroker.health_checks``).

The public gets ``{"status": "ok"}`` (200) or ``{"status": "unavailable"}`` (503) and
nothing else; an active staff user (session or API token) also gets each check's result
and the failing ones. A check of ours says what is wrong in words that name no host; a
library check's text may (a database error names its server), so staff see only its
exception class. Every failure is logged in full by django-health-check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any

from asgiref.sync import sync_to_async
from celery import current_app
from django.conf import settings
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from health_check.base import HealthCheck
from health_check.checks import Cache, Database
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from txbroker.db import broker_db
from txbroker.health_checks import Backlog, CeleryBroker
from txbroker.views import staff_caller


@dataclasses.dataclass
class MigrationsApplied(HealthCheck):
    """Every migration on disk is applied to the database ``alias``."""

    alias: str = "default"
    safe_messages = True

    def run(self) -> None:
        connection = connections[self.alias]
        try:
            executor = MigrationExecutor(connection)
            plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        finally:
            connection.close()  # this runs in a thread of the executor: leave no connection behind
        if plan:
            first = plan[0][0]
            raise ServiceUnavailable(
                f"{len(plan)} migration(s) not applied, first {first.app_label}.{first.name}"
            )


@dataclasses.dataclass
class CeleryWorkers(HealthCheck):
    """At least one Celery worker answers a ping within ``HEALTH_CELERY_PING_TIMEOUT``
    seconds (the answer returns as soon as one does)."""

    timeout: datetime.timedelta = dataclasses.field(
        default_factory=lambda: datetime.timedelta(seconds=settings.HEALTH_CELERY_PING_TIMEOUT), repr=False
    )
    safe_messages = True

    def run(self) -> None:
        try:
            replies = current_app.control.ping(timeout=self.timeout.total_seconds(), limit=1)
        except Exception as exc:  # its text names the broker's host
            raise ServiceUnavailable(f"cannot ping ({type(exc).__name__})") from exc
        if not replies:
            raise ServiceUnavailable(f"no worker answered within {self.timeout.total_seconds():g} s")


def named_checks() -> dict[str, HealthCheck]:
    checks: dict[str, HealthCheck] = {"database": Database("default")}
    if broker_db() != "default":
        checks["database_txbroker"] = Database(broker_db())
    checks["cache"] = Cache()
    checks["migrations"] = MigrationsApplied("default")
    if broker_db() != "default":
        checks["migrations_txbroker"] = MigrationsApplied(broker_db())
    checks["celery_broker"] = CeleryBroker()
    checks["celery_workers"] = CeleryWorkers()
    checks["txbroker_backlog"] = Backlog()
    return checks


def _detail(check: HealthCheck, error: Exception | None) -> str:
    if error is None:
        return "ok"
    if getattr(check, "safe_messages", False):
        return f"error: {error.message}"
    return f"error: {type(error.__cause__ or error).__name__}"


class HealthzView(HealthCheckView):
    """django-health-check's view, answering in the JSON shape above (200 or 503)."""

    async def get(self, request, *args: Any, **kwargs: Any) -> JsonResponse:
        checks = named_checks()
        with self.get_executor() as executor:
            results = await asyncio.gather(*(check.get_result(executor) for check in checks.values()))
        details = {name: _detail(r.check, r.error) for name, r in zip(checks, results, strict=True)}
        failing = [name for name, r in zip(checks, results, strict=True) if r.error]
        body: dict[str, Any] = {"status": "unavailable" if failing else "ok"}
        if await sync_to_async(staff_caller)(request):
            body["checks"] = details
            if failing:
                body["failing"] = failing
        return JsonResponse(body, status=503 if failing else 200)


healthz_view = HealthzView.as_view()
