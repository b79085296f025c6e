"""Reads for operators: the admin, the REST API, the commands and /metrics share these.

Every query here is bounded by an index, never by the size of the message table: lists are
paginated by the caller, counts are grouped over indexed columns, and "which topics exist"
is a loose index scan (one index probe per distinct value) instead of ``SELECT DISTINCT``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from django.db import connections
from django.db.models import Count, Exists, Min, OuterRef, Q, QuerySet
from django.db.models.functions import TruncMinute

from txbroker import dbtime
from txbroker.db import broker_db
from txbroker.models import Delivery, Message, MessageKey, TraceEvent
from txbroker.registry import registry
from txbroker.types import StoredMessage

State = Message.State
Status = Delivery.Status

# Deliveries not yet done: the backlog ("lag") of a consumer group.
OPEN_STATUSES = (Status.PENDING, Status.RUNNING, Status.RETRY)
# The statuses the stats report per group, in this order.
STAT_STATUSES = (Status.PENDING, Status.RUNNING, Status.RETRY, Status.SUCCEEDED, Status.DEAD)
HEX_DIGITS = frozenset("0123456789abcdef")
MSG_ID_LENGTH = 32


def messages() -> QuerySet[Message]:
    return Message.objects.using(broker_db())


# --- finding messages -----------------------------------------------------------------------
def looks_like_msg_id(text: str) -> bool:
    """A message id or a prefix of one (at least 6 hex digits, so short words are keys)."""
    return 6 <= len(text) <= MSG_ID_LENGTH and set(text) <= HEX_DIGITS


def msg_id_prefix_q(prefix: str) -> Q:
    """Message ids starting with ``prefix``, as a range on the primary key so that the index
    serves it whatever the collation (``LIKE 'x%'`` needs a C collation or pattern ops)."""
    if len(prefix) == MSG_ID_LENGTH:
        return Q(pk=prefix)
    return Q(pk__gte=prefix, pk__lt=prefix + "g")  # "g" sorts after every hex digit


def message_ids_with_key(key: str, *, limit: int = 1000) -> list[str]:
    """Ids of the messages carrying business key ``key`` (served by the key index)."""
    return list(
        MessageKey.objects.using(broker_db())
        .filter(key=key)
        .order_by("-message_id")
        .values_list("message_id", flat=True)[:limit]
    )


def messages_with_key(
    key: str, *, producer_group: Optional[str] = None, limit: int = 100
) -> list[StoredMessage]:
    """The messages carrying business key ``key``, newest first, with their states.

    How a producer learns what became of the messages it sent for one business object (for
    instance before sending another one): served by the key index, at most ``limit``.
    """
    qs = messages().with_key(key)
    if producer_group:
        qs = qs.filter(producer_group=producer_group)
    return [StoredMessage.of(m) for m in qs.order_by("-created_at", "-msg_id")[:limit]]


def message_search_q(term: str) -> Q:
    """Messages whose id starts with ``term`` or that carry ``term`` as a business key.

    The key lookup runs first (one indexed query) so that the final filter is a plain
    ``pk IN (...) OR pk range``, which PostgreSQL answers with a bitmap OR on the primary key
    instead of scanning the table for a sub-select.
    """
    term = term.strip()
    q = Q(pk__in=message_ids_with_key(term))
    if looks_like_msg_id(term.lower()):
        q |= msg_id_prefix_q(term.lower())
    return q


def delivery_exists(*, consumer_group: Optional[str] = None, status: Optional[str] = None) -> Exists:
    """Messages having one delivery that matches both conditions (the same delivery)."""
    conditions: dict[str, Any] = {"message": OuterRef("pk")}
    if consumer_group:
        conditions["consumer_group"] = consumer_group
    if status:
        conditions["status"] = status
    return Exists(Delivery.objects.using(broker_db()).filter(**conditions))


def message_list(
    *,
    state: Optional[str] = None,
    topic: Optional[str] = None,
    key: Optional[str] = None,
    producer_group: Optional[str] = None,
    consumer_group: Optional[str] = None,
    delivery_status: Optional[str] = None,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    message_group: Optional[str] = None,
) -> QuerySet[Message]:
    """Messages matching every given filter, newest first."""
    qs = messages()
    if message_group:
        qs = qs.filter(message_group=message_group)
    if state:
        qs = qs.filter(state=state)
    if topic:
        qs = qs.filter(topic=topic)
    if key:
        qs = qs.filter(pk__in=MessageKey.objects.using(broker_db()).filter(key=key).values("message_id"))
    if producer_group:
        qs = qs.filter(producer_group=producer_group)
    if consumer_group or delivery_status:
        qs = qs.filter(delivery_exists(consumer_group=consumer_group, status=delivery_status))
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    return qs.order_by("-created_at", "-msg_id")


def recent_message_groups(*, limit: int = 20) -> list[str]:
    """Up to ``limit`` message groups, alphabetically first (a bounded scan of the ordered
    messages' partial index, never of the table)."""
    rows = (
        messages()
        .exclude(message_group="")
        .order_by("message_group", "-created_at")
        .values_list("message_group", flat=True)[: limit * 20]
    )
    return list(dict.fromkeys(rows))[:limit]


@dataclass(frozen=True)
class BlockedGroup:
    """A message group a consumer group waits on: its first DEAD delivery blocks the rest
    (``on_dead_in_group="block"``) until an operator replays or skips it."""

    consumer_group: str
    message_group: str
    delivery_id: int
    msg_id: str
    sequence: Optional[int]
    since: datetime  # when the blocking delivery went DEAD
    last_error: str
    waiting: int  # deliveries of the group waiting behind it


def blocked_message_groups(*, consumer_group: Optional[str] = None, limit: int = 500) -> list[BlockedGroup]:
    """The message groups blocked behind a DEAD delivery, per consumer group whose policy is
    ``block`` (served by the ordered deliveries' partial index), longest blocked first."""
    db = broker_db()
    groups = registry.groups_blocking_on_dead()
    if consumer_group:
        groups = [g for g in groups if g == consumer_group]
    dead = (
        Delivery.objects.using(db)
        .filter(status=Status.DEAD, consumer_group__in=groups)
        .exclude(message_group="")
        .order_by("consumer_group", "message_group", "sequence")
        .values_list(
            "consumer_group", "message_group", "pk", "message_id", "sequence", "updated_at", "last_error"
        )
    )
    blockers: dict[tuple[str, str], tuple] = {}
    for row in dead[: limit * 10]:
        blockers.setdefault((row[0], row[1]), row)
        if len(blockers) >= limit:
            break
    waiting = dict.fromkeys(blockers, 0)
    behind = (
        Delivery.objects.using(db)
        .filter(
            consumer_group__in=groups,
            message_group__in={mg for _, mg in blockers},
            status__in=Delivery.WAITING,
        )
        .values_list("consumer_group", "message_group")
        .annotate(n=Count("pk"))
    )
    for group, message_group, count in behind:
        if (group, message_group) in waiting:
            waiting[group, message_group] = count
    found = [BlockedGroup(*row, waiting=waiting[key]) for key, row in blockers.items()]
    return sorted(found, key=lambda b: b.since)


def dead_letters(*, consumer_group: Optional[str] = None) -> QuerySet[Delivery]:
    """DEAD deliveries (served by the partial index on open deliveries), newest first."""
    qs = Delivery.objects.using(broker_db()).dead().select_related("message")
    if consumer_group:
        qs = qs.filter(consumer_group=consumer_group)
    return qs.order_by("-updated_at", "-id")


def dead_letter_counts() -> list[tuple[str, int]]:
    """(group, dead letters) for every group that has some: one grouped query on the partial
    index of open deliveries."""
    return list(
        Delivery.objects.using(broker_db())
        .dead()
        .order_by("consumer_group")
        .values_list("consumer_group")
        .annotate(n=Count("pk"))
        .values_list("consumer_group", "n")
    )


# --- distinct values without scanning -------------------------------------------------------
def distinct_values(model: type, column: str) -> list[str]:
    """The distinct values of an indexed leading column (``topic``, ``producer_group``,
    ``consumer_group``), by a loose index scan on PostgreSQL: one index probe per value."""
    db = broker_db()
    table = model._meta.db_table
    connection = connections[db]
    if connection.vendor != "postgresql":
        return list(model.objects.using(db).order_by(column).values_list(column, flat=True).distinct()[:500])
    qn = connection.ops.quote_name
    t, c = qn(table), qn(column)
    # Only quoted model metadata is interpolated, never input.
    sql = "".join(
        [
            "WITH RECURSIVE v(val) AS (",
            f" (SELECT {c} FROM {t} ORDER BY {c} LIMIT 1)",  # noqa: S608
            " UNION ALL",
            f" SELECT (SELECT {c} FROM {t} WHERE {c} > v.val ORDER BY {c} LIMIT 1) FROM v",  # noqa: S608
            " WHERE v.val IS NOT NULL",
            ") SELECT val FROM v WHERE val IS NOT NULL LIMIT 500",
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


def topics() -> list[str]:
    return distinct_values(Message, "topic")


def producer_groups() -> list[str]:
    return distinct_values(Message, "producer_group")


def consumer_groups() -> list[str]:
    """Consumer groups with deliveries, and those registered in this process."""
    return sorted(set(distinct_values(Delivery, "consumer_group")) | set(registry.consumer_groups()))


# --- counting a large table cheaply ---------------------------------------------------------
def table_row_estimate(model: type) -> Optional[int]:
    """PostgreSQL's own estimate of a table's rows (``pg_class.reltuples``), or None when the
    table was never analysed or the database is not PostgreSQL."""
    connection = connections[broker_db()]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


def query_row_estimate(qs: QuerySet) -> Optional[int]:
    """The planner's estimate of how many rows ``qs`` returns (EXPLAIN, nothing executed)."""
    if connections[qs.db].vendor != "postgresql":
        return None
    try:
        plan = qs.explain(format="json")
    except Exception:  # noqa: BLE001 - an estimate is optional
        return None
    import json

    try:
        return int(json.loads(plan)[0]["Plan"]["Plan Rows"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# --- stats ----------------------------------------------------------------------------------
def stats(*, now: Optional[datetime] = None) -> dict[str, Any]:
    """Messages per state, and per consumer group its deliveries per status, its backlog
    (``lag``: pending, running or waiting to retry) and the age of its oldest undone delivery.

    Three grouped queries over indexed columns; the shape is the REST API's ``/stats/``.
    """
    db = broker_db()
    now = now or dbtime.read(db)  # ages by the database's clock, as every time it wrote
    per_state = dict(
        Message.objects.using(db)
        .order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    result: dict[str, Any] = {"messages": {state: per_state.get(state, 0) for state in State.values}}

    groups: dict[str, dict[str, Any]] = defaultdict(dict)
    counts_by_status = (
        Delivery.objects.using(db)
        .order_by()
        .values_list("consumer_group", "status")
        .annotate(n=Count("pk"))
        .values_list("consumer_group", "status", "n")
    )
    for group, status, n in counts_by_status:
        groups[group][status] = n
    # Only undone deliveries are read here (the partial index on open deliveries).
    oldest: dict[str, datetime] = dict(
        Delivery.objects.using(db)
        .filter(status__in=OPEN_STATUSES)
        .order_by()
        .values_list("consumer_group")
        .annotate(oldest=Min("created_at"))
        .values_list("consumer_group", "oldest")
    )
    deliveries = {}
    for group in sorted(set(groups) | set(registry.consumer_groups())):
        counts = {status: groups[group].get(status, 0) for status in STAT_STATUSES}
        counts["lag"] = sum(counts[s] for s in OPEN_STATUSES)
        age = (now - oldest[group]).total_seconds() if group in oldest else 0.0
        counts["oldest_pending_age_seconds"] = round(max(age, 0.0), 3)
        deliveries[group] = counts
    result["deliveries"] = deliveries
    return result


# --- throughput -----------------------------------------------------------------------------
@dataclass
class Throughput:
    """Per-minute counts over a window, oldest minute first."""

    minutes: list[datetime]
    committed: list[int]
    consumed: list[int]
    failed: list[int]


def throughput(*, window: timedelta = timedelta(hours=1), now: Optional[datetime] = None) -> Throughput:
    """Commits, successful and failed delivery attempts per minute, from the trace: its
    COMMITTED rows, and its DELIVERY_ATTEMPT rows by their ``outcome`` (one grouped query on
    the (event, at) index); and the successes kept on delivery rows (one more, on the
    ``succeeded_at`` index)."""
    now = now or dbtime.read(broker_db())
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - window
    minutes = [start + timedelta(minutes=i) for i in range(int(window.total_seconds() // 60))]
    index = {m: i for i, m in enumerate(minutes)}
    series = {"committed": [0] * len(minutes), "consumed": [0] * len(minutes), "failed": [0] * len(minutes)}
    rows = (
        TraceEvent.objects.using(broker_db())
        .filter(
            event__in=[TraceEvent.Event.COMMITTED, TraceEvent.Event.DELIVERY_ATTEMPT],
            at__gte=start,
            at__lt=end,
        )
        .annotate(minute=TruncMinute("at"))
        .order_by()
        .values("minute")
        .annotate(
            committed=Count("pk", filter=Q(event=TraceEvent.Event.COMMITTED)),
            consumed=Count(
                "pk", filter=Q(event=TraceEvent.Event.DELIVERY_ATTEMPT, outcome=TraceEvent.Outcome.SUCCEEDED)
            ),
            failed=Count(
                "pk", filter=Q(event=TraceEvent.Event.DELIVERY_ATTEMPT, outcome=TraceEvent.Outcome.FAILED)
            ),
        )
    )
    for row in rows:
        i = index.get(row["minute"])
        if i is None:
            continue
        for name in series:
            series[name][i] = row[name]
    # Successes since txbroker.trace keeps them on the delivery row (the older ones are rows).
    consumed = (
        Delivery.objects.using(broker_db())
        .filter(duration_ms__isnull=False, succeeded_at__gte=start, succeeded_at__lt=end)
        .annotate(minute=TruncMinute("succeeded_at"))
        .order_by()
        .values("minute")
        .annotate(n=Count("pk"))
    )
    for row in consumed:
        i = index.get(row["minute"])
        if i is not None:
            series["consumed"][i] += row["n"]
    return Throughput(minutes=minutes, **series)
