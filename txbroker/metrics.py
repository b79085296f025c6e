"""Prometheus metrics: ``/metrics`` and ``/healthz``.

Two kinds of numbers, from two places:

* **Gauges are read from the database** (:class:`BrokerCollector`): messages by state,
  deliveries by group and status, backlog and oldest pending age per group. The database is
  the source of truth, so any web process answers the same. Reading them costs grouped
  counts over the tables, so a process reads them at most once per
  ``TXBROKER_METRICS_CACHE_SECONDS`` (15 s) and answers the scrapes between from memory:
  however often ``/metrics`` is scraped, the database does that work at most once per
  period per web process.
* **Counters and histograms are recorded where the work happens** (check passes, delivery
  attempts), which is in Celery worker processes, not in the web process serving
  ``/metrics``. They reach it through prometheus-client's *multiprocess mode*: set
  ``PROMETHEUS_MULTIPROC_DIR`` to the same empty directory for web and workers (wiped at
  deployment start); every process writes its values to files there and ``/metrics`` sums
  them. Without that variable each process only sees its own counters (fine for a single
  process, e.g. ``manage.py runserver`` with an in-process check).

Recording costs one dictionary lookup and a few additions per delivery attempt
(:func:`observe_delivery`) and per check pass (:func:`observe_check_pass`).

Who may ask: ``/metrics`` answers loopback clients (a Prometheus on the same host) that did
not come through a proxy, or, when ``METRICS_BEARER_TOKEN`` is set, only requests bearing
it (from anywhere). ``/healthz`` tells the public only ``{"status": ...}`` (200 or 503);
which check failed is for staff, and never a host, port or connection string.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Optional

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

logger = logging.getLogger("txbroker.metrics")

# Recorded metrics live in their own registry; /metrics adds the database gauges to them.
RECORDED = CollectorRegistry(auto_describe=True)

CHECKS = Counter(
    "txbroker_checks",
    "Check-backs that asked a checker, by its answer (COMMIT, ROLLBACK, UNKNOWN).",
    ["answer"],
    registry=RECORDED,
)
DISCARDS = Counter(
    "txbroker_discards",
    "HALF messages parked as DISCARDED after TXBROKER_CHECK_MAX checks answered UNKNOWN.",
    registry=RECORDED,
)
DELIVERY_ATTEMPTS = Counter(
    "txbroker_delivery_attempts",
    "Delivery attempts by consumer group and outcome (SUCCEEDED, RETRY, DEAD).",
    ["consumer_group", "outcome"],
    registry=RECORDED,
)
HANDLER_DURATION = Histogram(
    "txbroker_handler_duration_seconds",
    "Time a consumer handler took, with its delivery transaction.",
    ["consumer_group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=RECORDED,
)
COMMIT_TO_CONSUMED = Histogram(
    "txbroker_commit_to_consumed_seconds",
    "From a message's commit to its successful consumption by a group.",
    ["consumer_group"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 7200, 21600),
    registry=RECORDED,
)

# CheckReport outcomes -> the checker's answer ("NO_CHECKER" is not a check).
_ANSWER_OF_OUTCOME = {
    "COMMITTED": "COMMIT",
    "ROLLED_BACK": "ROLLBACK",
    "UNKNOWN": "UNKNOWN",
    "DISCARDED": "UNKNOWN",
}


def observe_check_pass(outcomes: Mapping[str, int]) -> None:
    """Count one check pass's answers (``CheckReport.outcomes``)."""
    try:
        for outcome, n in outcomes.items():
            answer = _ANSWER_OF_OUTCOME.get(outcome)
            if answer and n:
                CHECKS.labels(answer).inc(n)
        if outcomes.get("DISCARDED"):
            DISCARDS.inc(outcomes["DISCARDED"])
    except Exception:  # metrics never break the broker
        logger.warning("could not record check metrics", exc_info=True)


def observe_delivery(
    consumer_group: str,
    status: str,
    elapsed_ms: float,
    committed_at: Optional[datetime] = None,
    succeeded_at: Optional[datetime] = None,
) -> None:
    """Count one finished delivery attempt, its handler's time and, when it succeeded, the
    time from the message's commit to its consumption (both database times)."""
    try:
        DELIVERY_ATTEMPTS.labels(consumer_group, status).inc()
        HANDLER_DURATION.labels(consumer_group).observe(elapsed_ms / 1000)
        if status == "SUCCEEDED" and committed_at is not None and succeeded_at is not None:
            latency = (succeeded_at - committed_at).total_seconds()
            COMMIT_TO_CONSUMED.labels(consumer_group).observe(max(latency, 0.0))
    except Exception:  # metrics never break the broker
        logger.warning("could not record delivery metrics", exc_info=True)


def observe_worker_lost(consumer_group: str, status: str) -> None:
    """Count an attempt whose worker died or froze during the handler (taken back)."""
    try:
        DELIVERY_ATTEMPTS.labels(consumer_group, status).inc()
    except Exception:  # metrics never break the broker
        logger.warning("could not record delivery metrics", exc_info=True)


_gauges_lock = threading.Lock()
_gauges: Optional[tuple[float, dict[str, Any]]] = None  # (monotonic time read, stats)
_clock = time.monotonic  # a test moves it


def gauge_stats() -> dict[str, Any]:
    """:func:`txbroker.selectors.stats`, read at most once per TXBROKER_METRICS_CACHE_SECONDS
    in this process (0: at every call). Concurrent scrapes wait for the one reading."""
    from txbroker.conf import txsettings
    from txbroker.selectors import stats

    global _gauges
    max_age = txsettings.METRICS_CACHE_SECONDS
    with _gauges_lock:
        now = _clock()
        if _gauges is None or max_age <= 0 or now - _gauges[0] >= max_age:
            _gauges = (now, stats())
        return _gauges[1]


class BrokerCollector(Collector):
    """Gauges read from the database (:func:`gauge_stats`: at most once per period)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        data = gauge_stats()
        messages = GaugeMetricFamily("txbroker_messages", "Messages by state.", labels=["state"])
        for state, n in data["messages"].items():
            messages.add_metric([state], n)
        yield messages

        deliveries = GaugeMetricFamily(
            "txbroker_deliveries",
            "Deliveries by consumer group and status.",
            labels=["consumer_group", "status"],
        )
        backlog = GaugeMetricFamily(
            "txbroker_backlog",
            "Deliveries not yet done (pending, running, waiting to retry) per consumer group.",
            labels=["consumer_group"],
        )
        oldest = GaugeMetricFamily(
            "txbroker_oldest_pending_age_seconds",
            "Age of the oldest delivery not yet done, per consumer group (0 when none).",
            labels=["consumer_group"],
        )
        for group, counts in data["deliveries"].items():
            for status, n in counts.items():
                if status.isupper():
                    deliveries.add_metric([group, status], n)
            backlog.add_metric([group], counts["lag"])
            oldest.add_metric([group], counts["oldest_pending_age_seconds"])
        yield deliveries
        yield backlog
        yield oldest


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        # Every process's recorded counters and histograms, summed.
        MultiProcessCollector(registry)
    else:
        registry.register(_Recorded())
    registry.register(BrokerCollector())
    return registry


class _Recorded(Collector):
    def collect(self):
        return RECORDED.collect()


METRICS_FORBIDDEN = "/metrics answers local clients only (or set METRICS_BEARER_TOKEN)"
METRICS_UNAUTHORIZED = "/metrics needs the header Authorization: Bearer <METRICS_BEARER_TOKEN>"
# A request relayed by a reverse proxy on this host arrives from loopback too: these name it.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def metrics_refusal(request: HttpRequest) -> Optional[JsonResponse]:
    """None when ``request`` may read /metrics, else the answer: 401 without the bearer token
    when METRICS_BEARER_TOKEN is set, 403 for a client that is not local otherwise."""
    token = getattr(settings, "METRICS_BEARER_TOKEN", "")
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and constant_time_compare(given.strip(), token):
            return None
        refused = JsonResponse({"detail": METRICS_UNAUTHORIZED}, status=401)
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    if _loopback(request.META.get("REMOTE_ADDR", "")) and not any(h in request.META for h in PROXY_HEADERS):
        return None
    return JsonResponse({"detail": METRICS_FORBIDDEN}, status=403)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for local scrapers or the bearer of METRICS_BEARER_TOKEN."""
    refused = metrics_refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


# --- health ---------------------------------------------------------------------------------
def check_databases() -> None:
    from txbroker.transitions import broker_db

    for alias in dict.fromkeys(["default", broker_db()]):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")


def check_celery_broker(timeout: float = 3.0) -> None:
    from celery import current_app

    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


HEALTH_CHECKS = (("database", check_databases), ("celery_broker", check_celery_broker))


def _staff_caller(request: HttpRequest) -> bool:
    """Whether the caller is active staff, by session or by the API's authentication (a
    token); False whenever that cannot be told (the database that holds them is down)."""
    try:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            from rest_framework.request import Request
            from rest_framework.settings import api_settings

            authenticators = [auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
            user = Request(request, authenticators=authenticators).user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)
    except Exception:  # noqa: BLE001 - unknown callers are the public
        return False


@never_cache
@require_GET
def healthz_view(request: HttpRequest) -> JsonResponse:
    """200 when the database and the Celery broker answer, 503 otherwise: ``{"status"}``
    for anyone; staff also get each check's result (``"ok"`` or ``"error: <exception
    class>"``) and the failing ones. Error texts, which name hosts, ports, databases and
    roles, go to the log only."""
    checks: dict[str, str] = {}
    failing = []
    for name, check in HEALTH_CHECKS:
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            logger.warning("health check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}"
            failing.append(name)
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable"}
    if _staff_caller(request):
        body["checks"] = checks
        if failing:
            body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
