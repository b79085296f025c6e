"""One bench run of each design against fresh tables: load, wait until every payment is
consumed by all three groups, then measure (see ``manage.py bench``)."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import resource
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any, Optional

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections

from harness.bench import counting
from harness.bench.consumers import Consumers
from harness.bench.designs import (
    DESIGN_ENV,
    GROUPS,
    NOTES,
    PAY,
    consumed_counts,
    consumption_times,
    orders_create,
    tables_reset,
)
from harness.bench.processes import BackendCpu, child_env, named_cpu_seconds

NULL_SMS_BACKEND = "harness.bench.backends.NullSmsBackend"


@dataclass
class RunConfig:
    payments: int
    concurrency: int  # producer processes
    workers: int  # Celery pool processes
    work_dir: Path
    timeout: float = 600.0
    rate: Optional[float] = None  # payments per second in total; None: as fast as possible


def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, Optional[float]]:
    return {
        "p50": _round(percentile(values, 50)),
        "p95": _round(percentile(values, 95)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values) if values else None),
    }


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(value, digits)


# --- producers (forked children) ------------------------------------------------------------
def _produce(design: str, rows: list, rate: Optional[float], start_at: float, queue) -> None:
    try:
        os.environ.update(DESIGN_ENV.get(design, {}))
        # Warnings only, as the worker processes: no per-payment INFO line (procrastinate's
        # "Deferred 1 job") in one design's producer and not in another's.
        logging.getLogger().setLevel(logging.WARNING)
        settings.NOTIFICATIONS_SMS_BACKEND = NULL_SMS_BACKEND
        users = get_user_model().objects.in_bulk({user_id for _, user_id, _ in rows})
        pay = PAY[design]
        returned: dict[str, float] = {}
        failures: list[str] = []
        pause = start_at - time.time()
        if pause > 0:
            time.sleep(pause)
        counting.reset()
        before = resource.getrusage(resource.RUSAGE_SELF)
        for index, (order_id, user_id, amount) in enumerate(rows):
            if rate:
                wait = start_at + index / rate - time.time()
                if wait > 0:
                    time.sleep(wait)
            try:
                committed_at = pay(users[user_id], order_id, amount)
            except Exception as exc:  # noqa: BLE001 - a failed payment is counted, not fatal
                failures.append(f"{order_id}: {exc!r}")
                continue
            returned[order_id] = committed_at or time.time()
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        queue.put({"returned": returned, "failures": failures, "cpu": cpu, "counts": counting.snapshot()})
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        queue.put({"error": traceback.format_exc()})
    finally:
        connections.close_all()


def _clear_queue() -> None:
    """Empty the Celery broker of the bench (its own Redis db, or its filesystem folder)."""
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    elif url.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)


def _pg_transactions() -> Optional[int]:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def _pg_transactions_settled() -> Optional[int]:
    """pg_stat_database once the exited backends have flushed their counters."""
    if connection.vendor != "postgresql":
        return None
    last = None
    for _ in range(20):
        connections.close_all()  # our own backend flushes its counters as it exits
        time.sleep(0.25)
        value = _pg_transactions()
        if value == last:
            return value
        last = value
    return last


def run_design(
    design: str, cfg: RunConfig, *, label: Optional[str] = None, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run ``cfg.payments`` payments through ``design`` and measure it."""
    label = label or design
    tables_reset()
    _clear_queue()
    rows = orders_create(cfg.payments)
    count_dir = cfg.work_dir / f"counts-{label}"
    shutil.rmtree(count_dir, ignore_errors=True)
    count_dir.mkdir(parents=True)

    worker = None
    if design != "raw":
        env = child_env(**{counting.COUNT_DIR_ENV: str(count_dir)}, **DESIGN_ENV.get(design, {}))
        worker = Consumers(design, cfg.work_dir, workers=cfg.workers, env=env, label=label)
        try:
            worker.wait_ready()
        except BaseException:
            worker.stop()
            raise
    try:
        counting.install()
        pg_before = _pg_transactions_settled()
        parent_before = counting.snapshot()
        backends = BackendCpu(connection.settings_dict["NAME"]) if connection.vendor == "postgresql" else None
        if backends:
            backends.start()
        cpu_before = {
            "worker": worker.cpu_seconds() if worker else 0.0,
            "redis": named_cpu_seconds("redis-server"),
        }
        connections.close_all()  # never share a connection with forked producers
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        start_at = time.time() + 0.5
        per_producer_rate = cfg.rate / cfg.concurrency if cfg.rate else None
        producers = [
            context.Process(
                target=_produce,
                # At a set rate the producers take turns (arrivals evenly spaced), not bursts
                # of one payment from each at the same instant.
                args=(
                    design,
                    rows[i :: cfg.concurrency],
                    per_producer_rate,
                    start_at + (i / cfg.rate if cfg.rate else 0.0),
                    queue,
                ),
                daemon=True,
            )
            for i in range(cfg.concurrency)
        ]
        for proc in producers:
            proc.start()
        results = []
        deadline = time.monotonic() + cfg.timeout
        while len(results) < len(producers):
            if backends:
                backends.sample()
            try:
                results.append(queue.get(timeout=0.1))
            except Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{label}: the producers did not finish in {cfg.timeout:.0f}s"
                    ) from None
        for proc in producers:
            proc.join(timeout=30)
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"a {label} producer failed:\n{errors[0]}")
        returned: dict[str, float] = {}
        for result in results:
            returned.update(result["returned"])
        failures = [f for r in results for f in r["failures"]]

        expected = len(returned)
        while True:
            if backends:
                backends.sample()
            consumed = consumed_counts()
            if all(n >= expected for n in consumed.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: not fully consumed after {cfg.timeout:.0f}s: {consumed}")
            time.sleep(0.05)
        if backends:
            backends.sample()
        cpu_after = {
            "worker": worker.cpu_seconds() if worker else 0.0,
            "redis": named_cpu_seconds("redis-server"),
        }
        time.sleep(0.5)  # the pool processes write their last counts
    finally:
        if worker is not None:
            worker.stop()
    times = consumption_times()
    parent_counts = counting.snapshot()
    pg_after = _pg_transactions_settled()
    worker_counts = counting.read_dumps(count_dir)

    per_group: dict[str, list[float]] = {group: [] for group in GROUPS}
    all_three: list[float] = []
    last_consumed = start_at
    for order_id, at in returned.items():
        consumed_at = times.get(order_id, {})
        for group in GROUPS:
            per_group[group].append((consumed_at[group] - at) * 1000)
        done = max(consumed_at[group] for group in GROUPS)
        all_three.append((done - at) * 1000)
        last_consumed = max(last_consumed, done)
    n = max(1, len(returned))
    duration = last_consumed - start_at
    producer_counts = {
        key: sum(r["counts"].get(key, 0) for r in results) for key in ("statements", "transactions")
    }
    producer_cpu = sum(r["cpu"] for r in results)
    figures: dict[str, Any] = {
        "design": design,
        "payments": len(returned),
        "failed": len(failures),
        "failures": failures[:5],
        "producers": cfg.concurrency,
        "workers": cfg.workers if worker else 0,
        "rate_limit": cfg.rate,
        "seconds": round(duration, 3),
        "payments_per_s": round(len(returned) / duration, 1) if duration > 0 else None,
        "latency_ms": {**{g: summary(v) for g, v in per_group.items()}, "all": summary(all_three)},
        "statements_per_payment": {
            "producer": round(producer_counts["statements"] / n, 2),
            "worker": round(worker_counts.get("statements", 0) / n, 2),
        },
        "transactions_per_payment": {
            "producer": round(producer_counts["transactions"] / n, 2),
            "worker": round(worker_counts.get("transactions", 0) / n, 2),
        },
        "cpu_ms_per_payment": {
            "producer": round(producer_cpu * 1000 / n, 3),
            "worker": round((cpu_after["worker"] - cpu_before["worker"]) * 1000 / n, 3),
            "postgres": round(backends.seconds() * 1000 / n, 3) if backends else None,
            "redis": round((cpu_after["redis"] - cpu_before["redis"]) * 1000 / n, 3),
        },
    }
    for key in ("statements_per_payment", "transactions_per_payment"):
        figures[key]["total"] = round(figures[key]["producer"] + figures[key]["worker"], 2)
    if pg_before is not None and pg_after is not None:
        # Less the bench's own polling (each statement of this process was one transaction).
        own = parent_counts.get("transactions", 0) - parent_before.get("transactions", 0)
        figures["transactions_per_payment"]["postgres"] = round((pg_after - pg_before - own) / n, 2)
    if design in NOTES:
        figures["note"] = NOTES[design]
    figures["_all_ms"] = all_three  # for the plot; dropped from the JSON
    progress(
        f"{label}: {figures['payments']} payments in {duration:.2f}s = {figures['payments_per_s']}/s, "
        f"p99 all three {figures['latency_ms']['all']['p99']} ms"
    )
    return figures
