"""History independence: a check-back pass, a delivery sweep and a claim pass cost the
same with 1,000,000 finished messages in the tables as with 1,000; the admin's and the
API's message lists answer a page in the same number of queries.

The finished history (COMMITTED messages, their keys, three SUCCEEDED deliveries each and
five trace rows each) is generated in bulk SQL (``generate_series``), never through the
ORM. The due work is the same at every size: 100 HALF messages due for a check (their
checker answers UNKNOWN, so each pass finds them again) and 300 due deliveries.
PostgreSQL only.
"""

# S608: only table names from the models' metadata are formatted into this SQL; values
# are parameters or constants of the bench.
# ruff: noqa: S608
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from harness.bench.designs import tables_reset
from txbroker import delivery, fastpath
from txbroker.checkback import check_pass
from txbroker.models import Delivery, LocalTransactionState, Message
from txbroker.registry import registry

HISTORY_GROUP = "bench_history_group"
DUE_HALF = 100
DUE_MESSAGES = 100  # x 3 groups = 300 due deliveries
GROUPS = ("order_consumer_group", "points_consumer_group", "notification_consumer_group")
ADMIN_USER = "bench-history-admin"


def _unknown(message) -> LocalTransactionState:
    return LocalTransactionState.UNKNOWN


def _sql(statement: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def fill_finished(start: int, stop: int) -> None:
    """Finished messages ``start``..``stop - 1``: COMMITTED, a key each, three SUCCEEDED
    deliveries and five trace rows each. Older numbers are older messages."""
    m, k, d, t = (
        Message._meta.db_table,
        "txbroker_messagekey",
        Delivery._meta.db_table,
        "txbroker_traceevent",
    )
    span = [start, stop - 1]
    at = "now() - interval '1 day' - g * interval '1 second'"
    _sql(
        f"INSERT INTO {m} (msg_id, topic, tag, keys, body, properties, producer_group, state, "
        "check_times, next_check_at, created_at, resolved_at) "
        "SELECT 'H' || lpad(g::text, 12, '0'), 'payment_success_topic', 'pay', "
        "jsonb_build_array('ORD-H' || g), jsonb_build_object('order_id', 'ORD-H' || g, 'amount', '99.90'), "
        f"'{{}}'::jsonb, 'payment_producer_group', 'COMMITTED', 0, NULL, {at}, {at} + interval '40 ms' "
        "FROM generate_series(%s, %s) AS g",
        span,
    )
    _sql(
        f"INSERT INTO {k} (message_id, key) SELECT 'H' || lpad(g::text, 12, '0'), 'ORD-H' || g "
        "FROM generate_series(%s, %s) AS g",
        span,
    )
    _sql(
        f"INSERT INTO {d} (message_id, consumer_group, status, attempts, next_attempt_at, claim_token, "
        "claimed_until, last_error, created_at, updated_at, succeeded_at) "
        f"SELECT 'H' || lpad(g::text, 12, '0'), grp, 'SUCCEEDED', 1, {at}, '', NULL, '', {at}, {at}, {at} "
        "FROM generate_series(%s, %s) AS g, unnest(%s::text[]) AS grp",
        [*span, list(GROUPS)],
    )
    _sql(
        f"INSERT INTO {t} (message_id, at, event, consumer_group, detail, actor) "
        f"SELECT 'H' || lpad(g::text, 12, '0'), {at}, e.event, e.grp, e.detail, '' "
        "FROM generate_series(%s, %s) AS g, (VALUES "
        "('HALF_STORED', '', 'producer group payment_producer_group'), "
        "('COMMITTED', '', 'by producer'), "
        "('DELIVERY_ATTEMPT', 'order_consumer_group', 'attempt 1: SUCCEEDED in 2.0 ms'), "
        "('DELIVERY_ATTEMPT', 'points_consumer_group', 'attempt 1: SUCCEEDED in 2.0 ms'), "
        "('DELIVERY_ATTEMPT', 'notification_consumer_group', 'attempt 1: SUCCEEDED in 2.0 ms')"
        ") AS e(event, grp, detail)",
        span,
    )


def due_work_create() -> None:
    """The constant due work: HALF messages of the bench group, and due deliveries."""
    m, d = Message._meta.db_table, Delivery._meta.db_table
    _sql(
        f"INSERT INTO {m} (msg_id, topic, tag, keys, body, properties, producer_group, state, "
        "check_times, next_check_at, created_at, resolved_at) "
        "SELECT 'DH' || lpad(g::text, 10, '0'), 'bench_history_topic', '', '[]'::jsonb, '{}'::jsonb, "
        f"'{{}}'::jsonb, %s, 'HALF', 0, now(), now(), NULL FROM generate_series(1, %s) AS g",
        [HISTORY_GROUP, DUE_HALF],
    )
    _sql(
        f"INSERT INTO {m} (msg_id, topic, tag, keys, body, properties, producer_group, state, "
        "check_times, next_check_at, created_at, resolved_at) "
        "SELECT 'DC' || lpad(g::text, 10, '0'), 'bench_history_topic', '', '[]'::jsonb, '{}'::jsonb, "
        f"'{{}}'::jsonb, %s, 'COMMITTED', 0, NULL, now(), now() FROM generate_series(1, %s) AS g",
        [HISTORY_GROUP, DUE_MESSAGES],
    )
    _sql(
        f"INSERT INTO {d} (message_id, consumer_group, status, attempts, next_attempt_at, claim_token, "
        "claimed_until, last_error, created_at, updated_at, succeeded_at) "
        "SELECT 'DC' || lpad(g::text, 10, '0'), grp, 'PENDING', 0, now(), '', NULL, '', now(), now(), NULL "
        "FROM generate_series(1, %s) AS g, unnest(%s::text[]) AS grp",
        [DUE_MESSAGES, list(GROUPS)],
    )


def due_work_reset() -> None:
    """Make the due work due again (a pass postpones the checks; a claim runs deliveries)."""
    _sql(
        f"UPDATE {Message._meta.db_table} SET state = 'HALF', check_times = 0, resolved_at = NULL, "
        "next_check_at = now() - interval '1 second' WHERE msg_id LIKE 'DH%%'"
    )
    _sql(
        f"UPDATE {Delivery._meta.db_table} SET status = 'PENDING', attempts = 0, claim_token = '', "
        "claimed_until = NULL, next_attempt_at = now() - interval '1 second' WHERE message_id LIKE 'DC%%'"
    )
    _sql("DELETE FROM txbroker_traceevent WHERE message_id LIKE 'D%%'")


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _claim_all() -> None:
    while True:
        _token, batch = delivery.claim_due(50)
        if not batch:
            return


def measure(repeats: int) -> dict[str, float]:
    """Median milliseconds of a check pass, a sweep and a claim pass over the due work."""
    from harness.bench.runner import _clear_queue

    times: dict[str, list[float]] = {"check_pass": [], "sweep": [], "claim_pass": []}
    for run in range(repeats + 1):
        due_work_reset()
        times["check_pass"].append(_timed(check_pass))
        due_work_reset()
        times["sweep"].append(_timed(delivery.sweep))
        _clear_queue()
        due_work_reset()
        times["claim_pass"].append(_timed(_claim_all))
        if run == 0:  # a warm-up: caches, first compilations
            for values in times.values():
                values.clear()
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def _explain(sql: str, params: list[Any]) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)  # EXPLAIN ANALYZE of the claim really claims
    return plan


def plans() -> dict[str, str]:
    """The hot queries' plans, with the due work in place and the full history around it."""
    due_work_reset()
    queries = {
        "check_claim": Message.objects.due_for_check()
        .select_for_update(skip_locked=True)
        .order_by("next_check_at")
        .values_list("pk", flat=True)[:100],
        "deliveries_due": Delivery.objects.due()
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:3200],
        "claim_expired": Delivery.objects.claim_expired()
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:1000],
    }
    found = {}
    for name, queryset in queries.items():
        with transaction.atomic():  # FOR UPDATE compiles only inside a transaction
            sql, params = queryset.query.sql_with_params()
        found[name] = _explain(sql, list(params))
    waiting = list(Delivery.WAITING)
    found["claim_statement"] = _explain(
        fastpath.claim_sql(), [*waiting, False, 50, Delivery.Status.RUNNING, "explain", 30.0]
    )
    return found


def list_pages(repeats: int = 3) -> dict[str, dict[str, Any]]:
    """Server time and query count of the admin's and the API's message list, pages 1 and 2."""
    User = get_user_model()
    user, _ = User.objects.get_or_create(
        username=ADMIN_USER, defaults={"is_staff": True, "is_superuser": True, "email": ""}
    )
    client = Client()
    client.force_login(user)
    found: dict[str, dict[str, Any]] = {}

    def fetch(name: str, url: str) -> Any:
        durations, counts, response = [], [], None
        client.get(url)  # a warm-up: templates, first compilations
        for _ in range(repeats):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                durations.append((time.perf_counter() - started) * 1000)
            counts.append(len(queries.captured_queries))
            if response.status_code != 200:
                found[name] = {"url": url, "status": response.status_code}
                return None
        found[name] = {
            "url": url,
            "status": 200,
            "ms": round(statistics.median(durations), 1),
            "queries": max(counts),
        }
        return response

    fetch("admin_page_1", "/admin/txbroker/message/")
    fetch("admin_page_2", "/admin/txbroker/message/?p=1")
    first = fetch("api_page_1", "/api/txbroker/messages/")
    if first is not None:
        following = first.json().get("next")
        if following:
            fetch("api_page_2", following.replace("http://testserver", ""))
    return found


def history_bench(
    sizes: tuple[int, ...] = (1_000, 1_000_000), repeats: int = 5, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    if connection.vendor != "postgresql":
        raise RuntimeError("the history bench generates rows with PostgreSQL's generate_series")
    registry.register_checker(HISTORY_GROUP, _unknown)
    # Generating a million messages takes statements longer than the application's bound.
    _sql("SET statement_timeout = 0")
    tables_reset()
    due_work_create()
    results: dict[str, Any] = {"sizes": {}}
    made = 0
    for size in sizes:
        started = time.perf_counter()
        step = 250_000
        while made < size:
            upto = min(size, made + step)
            fill_finished(made + 1, upto + 1)
            made = upto
            progress(f"  {made:,} finished messages")
        _sql("ANALYZE")
        progress(f"generated {size:,} finished messages in {time.perf_counter() - started:.1f}s")
        figures = measure(repeats)
        figures["pages"] = list_pages()
        results["sizes"][str(size)] = figures
        progress(f"{size:,}: {figures}")
    results["plans"] = plans()
    results["seq_scans_in_plans"] = sorted(
        name for name, plan in results["plans"].items() if "Seq Scan" in plan
    )
    small, large = (results["sizes"][str(s)] for s in (sizes[0], sizes[-1]))
    results["ratios"] = {
        name: round(large[name] / small[name], 3) if small[name] else None
        for name in ("check_pass", "sweep", "claim_pass")
    }
    return results
