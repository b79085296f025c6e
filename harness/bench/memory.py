"""Worker resident memory over many deliveries: one Celery pool process runs
``deliveries`` payment deliveries (generated in bulk: orders, COMMITTED messages, PENDING
deliveries to the three groups), and its RSS is sampled as it goes. Flat means the last
sample is within 10% of the one taken after the first tenth (the warm-up: imports,
caches, connection buffers)."""

# S608: only table names from the models' metadata are formatted into this SQL; values
# are parameters or constants of the bench.
# ruff: noqa: S608
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection, connections

from harness.bench.designs import consumed_counts, orders_create, tables_reset
from harness.bench.history import GROUPS, _sql
from harness.bench.processes import Worker, child_env, pool_rss
from harness.bench.runner import _clear_queue
from orders.models import Order
from txbroker.models import Delivery, Message


def _messages_for_orders(count: int) -> None:
    """A COMMITTED payment message and three PENDING deliveries per bench order."""
    m, d = Message._meta.db_table, Delivery._meta.db_table
    _sql(
        f"INSERT INTO {m} (msg_id, topic, tag, keys, body, properties, producer_group, state, "
        "check_times, next_check_at, created_at, resolved_at) "
        "SELECT 'M' || lpad(o.id::text, 12, '0'), 'payment_success_topic', 'pay', jsonb_build_array(o.order_id), "
        "jsonb_build_object('order_id', o.order_id, 'user_id', o.user_id, 'amount', o.amount::text, "
        "'pay_time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')), "
        "'{}'::jsonb, 'payment_producer_group', 'COMMITTED', 0, NULL, now(), now() "
        f"FROM {Order._meta.db_table} AS o"
    )
    _sql(
        f"INSERT INTO {d} (message_id, consumer_group, status, attempts, next_attempt_at, claim_token, "
        "claimed_until, last_error, created_at, updated_at, succeeded_at) "
        "SELECT m.msg_id, grp, 'PENDING', 0, now(), '', NULL, '', now(), now(), NULL "
        f"FROM {m} AS m, unnest(%s::text[]) AS grp",
        [list(GROUPS)],
    )


def memory_bench(
    deliveries: int, work_dir: Path, *, samples: int = 20, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    if connection.vendor != "postgresql":
        raise RuntimeError("the memory bench generates rows with PostgreSQL SQL")
    payments = -(-deliveries // 3)
    tables_reset()
    _clear_queue()
    orders_create(payments, users=1000)
    _messages_for_orders(payments)
    connections.close_all()
    worker = Worker(work_dir, concurrency=1, env=child_env(), name="memory")
    worker.wait_ready()
    rss: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        from txbroker.tasks import deliver

        deliver.delay()  # the task hands over to a fresh one at each budget's end
        step = max(1, deliveries // samples)
        next_mark = step
        while True:
            done = sum(consumed_counts().values())
            if done >= next_mark or done >= deliveries:
                sizes = pool_rss(worker.pid)
                rss.append({"deliveries": done, "rss_mb": round(max(sizes, default=0) / 2**20, 1)})
                progress(f"  {done:,} deliveries, pool process RSS {rss[-1]['rss_mb']} MB")
                next_mark = (done // step + 1) * step
            if done >= deliveries:
                break
            if time.monotonic() - started > 3600:
                raise RuntimeError(f"only {done} of {deliveries} deliveries after an hour")
            time.sleep(0.5)
    finally:
        worker.stop()
    seconds = time.monotonic() - started
    warm = next((s for s in rss if s["deliveries"] >= deliveries // 10), rss[0])
    growth = (rss[-1]["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"] if warm["rss_mb"] else None
    return {
        "deliveries": deliveries,
        "seconds": round(seconds, 1),
        "deliveries_per_s": round(deliveries / seconds, 1),
        "samples": rss,
        "rss_after_warmup_mb": warm["rss_mb"],
        "rss_end_mb": rss[-1]["rss_mb"],
        "growth_after_warmup": round(growth, 4) if growth is not None else None,
    }
