"""Prometheus metrics: what ``/metrics`` (txbroker.views) shows.

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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Optional

from django.core.exceptions import ImproperlyConfigured

from txbroker.conf import txsettings
from txbroker.selectors import stats

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector
except ImportError:  # the `metrics` extra is not installed: nothing is recorded, no /metrics
    ENABLED = False
    Collector = object
else:
    ENABLED = True

logger = logging.getLogger("txbroker.metrics")


if ENABLED:
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
    if not ENABLED:
        return
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
    if not ENABLED:
        return
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
    if not ENABLED:
        return
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
    global _gauges
    max_age = txsettings.METRICS_CACHE_SECONDS
    with _gauges_lock:
        now = _clock()
        if _gauges is None or max_age <= 0 or now - _gauges[0] >= max_age:
            _gauges = (now, {**stats(), "grpc_clients": _grpc_clients()})
        return _gauges[1]


def _grpc_clients() -> dict[tuple[str, bool], int]:
    from txbroker.db import broker_db
    from txbroker.models import GrpcClient

    return GrpcClient.objects.using(broker_db()).counts(txsettings.GRPC_CLIENT_TIMEOUT)


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

        clients = GaugeMetricFamily(
            "txbroker_grpc_clients",
            "RocketMQ clients over gRPC by kind, live (heard from within TXBROKER_GRPC_CLIENT_TIMEOUT) or not.",
            labels=["kind", "live"],
        )
        for (kind, live), n in sorted(data.get("grpc_clients", {}).items()):
            clients.add_metric([kind, "true" if live else "false"], n)
        yield clients


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every process's recorded counters and histograms, summed.
        MultiProcessCollector(registry)
    else:
        registry.register(_Recorded())
    registry.register(BrokerCollector())
    return registry


class _Recorded(Collector):
    def collect(self):
        return RECORDED.collect()


def exposition() -> bytes:
    """Every metric in Prometheus text format: the recorded ones (of every process, in
    multiprocess mode) and the database gauges."""
    if not ENABLED:
        raise ImproperlyConfigured("/metrics needs prometheus-client: pip install django-txbroker[metrics]")
    return generate_latest(_registry())
