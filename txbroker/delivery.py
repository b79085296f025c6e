"""Delivery to consumer groups: claim due deliveries in batches, run each handler in one
database transaction together with marking its delivery done, retry, dead letters.

Every state move of a Delivery is here, each one conditional UPDATE:

    PENDING | RETRY --claim--> RUNNING --success--> SUCCEEDED
                                  |---failure--> RETRY (after a delay) | DEAD
                                  |---claim expired (worker died)--> RETRY, due now
                                  '---released (worker stopping)---> back as it was
    DEAD | RETRY (| SUCCEEDED with force) --replay--> PENDING, due now

Exactly once: the handler's writes and the move to SUCCEEDED commit together, and only
while the claim is still this worker's (the row is locked and its claim token checked in
the same transaction). A second run of the same delivery finds it SUCCEEDED, or finds the
claim gone and rolls its handler back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Optional

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F
from django.utils import timezone

from txbroker import fastpath
from txbroker.conf import txsettings
from txbroker.exceptions import NoConsumer
from txbroker.faults import fault_error, fault_point
from txbroker.metrics import observe_delivery
from txbroker.models import Delivery, TraceEvent
from txbroker.producer import trimmed_traceback
from txbroker.registry import Consumer, registry
from txbroker.transitions import broker_db, trace_many
from txbroker.types import ConsumedMessage

logger = logging.getLogger("txbroker.delivery")

Status = Delivery.Status
Event = TraceEvent.Event

# Set when the worker is asked to stop: a running batch releases what it has not started.
stopping = threading.Event()
# Set while this process runs a batch (the SIGTERM handler waits for it to wind down).
in_batch = threading.Event()


@dataclass
class BatchReport:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    skipped: int = 0
    released: int = 0
    durations_ms: list[float] = field(default_factory=list)
    # The budget ran out after a full batch: more deliveries are probably due.
    more_due: bool = False


def retry_delay(failed_attempts: int) -> float:
    """Seconds before the next attempt once ``failed_attempts`` attempts failed."""
    delays = txsettings.RETRY_DELAYS
    return delays[min(failed_attempts, len(delays)) - 1]


def max_reconsume_times(consumer: Optional[Consumer]) -> int:
    if consumer is not None and consumer.max_reconsume_times is not None:
        return consumer.max_reconsume_times
    return txsettings.MAX_RECONSUME_TIMES


# --- claiming -----------------------------------------------------------------------------
def claim_due(limit: int, *, ids: Optional[Iterable[int]] = None) -> tuple[str, list[Delivery]]:
    """Claim up to ``limit`` due deliveries (oldest first) for this worker: one transaction,
    ``FOR UPDATE SKIP LOCKED`` so concurrent workers never claim the same row."""
    db = broker_db()
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed_until = now + timedelta(seconds=txsettings.CLAIM_TIMEOUT)
    # PostgreSQL: the SKIP LOCKED pick and the move to RUNNING in one statement (see
    # txbroker.fastpath); elsewhere the same two steps in one transaction.
    picked = fastpath.claim_due(
        db,
        token=token,
        now=now,
        claimed_until=claimed_until,
        limit=limit,
        ids=None if ids is None else list(ids),
    )
    if picked is None:
        with transaction.atomic(using=db):
            due = Delivery.objects.using(db).due(now)
            if ids is not None:
                due = due.filter(pk__in=list(ids))
            picked = list(
                due.select_for_update(skip_locked=True)
                .order_by("next_attempt_at")
                .values_list("pk", flat=True)[:limit]
            )
            if picked:
                Delivery.objects.using(db).filter(pk__in=picked, status__in=Delivery.WAITING).update(
                    status=Status.RUNNING,
                    claim_token=token,
                    claimed_until=claimed_until,
                    attempts=F("attempts") + 1,
                    updated_at=now,
                )
    if not picked:
        return token, []
    claimed = list(
        Delivery.objects.using(db)
        .filter(pk__in=picked, claim_token=token, status=Status.RUNNING)
        .select_related("message")
        .order_by("next_attempt_at", "pk")
    )
    return token, claimed


def reclaim_expired(now=None) -> int:
    """Take back claims that ran out (their worker died, or is far behind): due now.

    A delivery whose handler is running holds its row lock, so SKIP LOCKED leaves it alone.
    """
    db = broker_db()
    now = now or timezone.now()
    with transaction.atomic(using=db):
        expired = list(
            Delivery.objects.using(db)
            .claim_expired(now)
            .select_for_update(skip_locked=True)
            .values_list("pk", "message_id", "consumer_group", "attempts")[:1000]
        )
        if not expired:
            return 0
        Delivery.objects.using(db).filter(
            pk__in=[row[0] for row in expired], status=Status.RUNNING, claimed_until__lt=now
        ).update(
            status=Status.RETRY,
            claim_token="",
            claimed_until=None,
            next_attempt_at=now,
            updated_at=now,
            last_error="claim expired: the worker that claimed it died or fell behind",
        )
        trace_many(
            TraceEvent(
                message_id=msg_id,
                event=Event.RECLAIMED,
                consumer_group=group,
                detail=f"attempt {attempts}: claim expired; due again now",
            )
            for _, msg_id, group, attempts in expired
        )
    return len(expired)


def release(deliveries: list[Delivery], token: str) -> int:
    """Give back claimed deliveries that were not started (the worker is stopping)."""
    if not deliveries:
        return 0
    db = broker_db()
    now = timezone.now()
    with transaction.atomic(using=db):
        released = (
            Delivery.objects.using(db)
            .filter(pk__in=[d.pk for d in deliveries], claim_token=token, status=Status.RUNNING)
            .update(
                status=Status.RETRY,
                claim_token="",
                claimed_until=None,
                attempts=F("attempts") - 1,
                next_attempt_at=now,
                updated_at=now,
            )
        )
        trace_many(
            TraceEvent(
                message_id=d.message_id,
                event=Event.RELEASED,
                consumer_group=d.consumer_group,
                detail="worker stopping: released before it started; due again now",
            )
            for d in deliveries
        )
    return released


# --- running ------------------------------------------------------------------------------
def deliver_due(*, budget_seconds: Optional[float] = None, batch_size: Optional[int] = None) -> BatchReport:
    """Claim and run due deliveries in batches until none is due or the budget is spent."""
    report = BatchReport()
    budget = txsettings.TASK_BUDGET if budget_seconds is None else budget_seconds
    size = batch_size or txsettings.BATCH_SIZE
    deadline = time.monotonic() + budget
    in_batch.set()
    try:
        while not stopping.is_set():
            token, batch = claim_due(size)
            report.claimed += len(batch)
            run_batch(batch, token, report)
            if len(batch) < size:
                break
            if time.monotonic() >= deadline:
                report.more_due = not stopping.is_set()
                break
    finally:
        in_batch.clear()
    return report


def run_batch(batch: list[Delivery], token: str, report: BatchReport) -> None:
    for index, delivery in enumerate(batch):
        if stopping.is_set():
            report.released += release(batch[index:], token)
            return
        run_claimed(delivery, token, report)


def _handler_databases() -> list[str]:
    """The delivery's database, and the handlers' (``default``) when txbroker has its own:
    both transactions commit together at the end of ``run_claimed``."""
    db = broker_db()
    return [db] if db == DEFAULT_DB_ALIAS else [db, DEFAULT_DB_ALIAS]


def _atomic_all(stack: ExitStack, databases: list[str]) -> None:
    for alias in databases:
        stack.enter_context(transaction.atomic(using=alias))


class _HandlerFailed(Exception):
    """Carries a handler's exception out of its transaction, which then rolls back."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def run_claimed(delivery: Delivery, token: str, report: BatchReport) -> str:
    """Run one claimed delivery's handler; returns the delivery's new status.

    Success: one transaction holds the row lock (the claim checked), the handler's writes,
    and the move to SUCCEEDED with its trace row; they commit together. Failure: that
    transaction rolls back (the handler's writes with it) and the failure is recorded in
    a second one, by the same conditional UPDATE on the claim token. No savepoint is
    needed for that, which saves two round trips on every successful delivery.
    """
    db = broker_db()
    message = delivery.message
    consumer = registry.consumer_for(message.topic, delivery.consumer_group)
    started = time.monotonic()
    databases = _handler_databases()
    try:
        with ExitStack() as stack:
            _atomic_all(stack, databases)
            # Lock the row and check the claim is still ours: from here to commit, nobody
            # else can take it back, and a second runner waits, then finds it done.
            still_ours = fastpath.lock_claim(db, delivery.pk, token)
            if still_ours is None:
                still_ours = (
                    Delivery.objects.using(db)
                    .select_for_update()
                    .filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING)
                    .exists()
                )
            if not still_ours:
                report.skipped += 1
                return "SKIPPED"
            try:
                if consumer is None:
                    raise NoConsumer(
                        f"no consumer registered for group {delivery.consumer_group!r} on topic "
                        f"{message.topic!r} in this worker (was it removed from the code?)"
                    )
                if delivery.attempts == 1:
                    fault_error("handler_first_attempt_error")
                consumer.handler(
                    ConsumedMessage.of(
                        message, consumer_group=delivery.consumer_group, reconsume_times=delivery.attempts - 1
                    )
                )
                fault_point("handler_before_commit")
            except Exception as exc:  # a failing handler is retried, never fatal
                raise _HandlerFailed(exc) from exc
            elapsed_ms = (time.monotonic() - started) * 1000
            status = _mark_succeeded(delivery, token, elapsed_ms)
        report.succeeded += 1
    except _HandlerFailed as failed:
        elapsed_ms = (time.monotonic() - started) * 1000
        status = _mark_failed(delivery, token, consumer, failed.error, elapsed_ms)
        report.failed += 1
        report.dead += status == Status.DEAD
    report.durations_ms.append(elapsed_ms)
    observe_delivery(delivery.consumer_group, status, elapsed_ms, message.resolved_at)
    fault_point("handler_after_commit")
    return status


def _mark_succeeded(delivery: Delivery, token: str, elapsed_ms: float) -> str:
    db = broker_db()
    now = timezone.now()
    # Every attempt keeps its trace row (the operator's per-message history), written in
    # the same statement as the move on PostgreSQL, so it costs no extra round trip.
    event = TraceEvent(
        message_id=delivery.message_id,
        event=Event.DELIVERY_ATTEMPT,
        consumer_group=delivery.consumer_group,
        detail=f"attempt {delivery.attempts}: SUCCEEDED in {elapsed_ms:.1f} ms",
        at=now,
    )
    moved = fastpath.delivery_succeed(db, delivery.pk, token, now=now, event=event)
    if moved is None:
        moved = (
            Delivery.objects.using(db)
            .filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING)
            .update(
                status=Status.SUCCEEDED,
                claim_token="",
                claimed_until=None,
                succeeded_at=now,
                updated_at=now,
                last_error="",
            )
        )
        if moved:
            trace_many([event])
    assert moved, "the claim was checked under a row lock in this transaction"
    return Status.SUCCEEDED


def _mark_failed(
    delivery: Delivery,
    token: str,
    consumer: Optional[Consumer],
    error: BaseException,
    elapsed_ms: float,
) -> str:
    db = broker_db()
    now = timezone.now()
    limit = max_reconsume_times(consumer)
    text = trimmed_traceback(error)
    dead = delivery.attempts > limit
    if dead:
        fields = {"status": Status.DEAD}
    else:
        fields = {
            "status": Status.RETRY,
            "next_attempt_at": now + timedelta(seconds=retry_delay(delivery.attempts)),
        }
    summary = f"{type(error).__name__}: {error}"[:500]
    events = [
        TraceEvent(
            message_id=delivery.message_id,
            event=Event.DELIVERY_ATTEMPT,
            consumer_group=delivery.consumer_group,
            detail=(
                f"attempt {delivery.attempts}: FAILED in {elapsed_ms:.1f} ms: {summary}"
                + ("" if dead else f"; retry at {fields['next_attempt_at']:%Y-%m-%d %H:%M:%S}")
            ),
        )
    ]
    if dead:
        events.append(
            TraceEvent(
                message_id=delivery.message_id,
                event=Event.DEAD,
                consumer_group=delivery.consumer_group,
                detail=f"{delivery.attempts} attempts failed (max reconsume times {limit}); "
                f"last error: {summary}",
            )
        )
        logger.error(
            "delivery %s of message %s to %s is DEAD: %s",
            delivery.pk,
            delivery.message_id,
            delivery.consumer_group,
            summary,
        )
    # Its own transaction: the handler's one has rolled back. The claim token still guards
    # the move (a claim taken back meanwhile moves nothing; the attempt is still traced).
    with transaction.atomic(using=db):
        Delivery.objects.using(db).filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING).update(
            claim_token="", claimed_until=None, last_error=text, updated_at=now, **fields
        )
        trace_many(events)
    return fields["status"]


# --- replay -------------------------------------------------------------------------------
def replay(msg_id: str, *, group: Optional[str] = None, force: bool = False, actor: str = "") -> int:
    """Make a message's deliveries due now: DEAD and RETRY ones, SUCCEEDED ones only with
    ``force``. The attempt count (the history) is kept. Returns how many were replayed."""
    statuses = [Status.DEAD, Status.RETRY] + ([Status.SUCCEEDED] if force else [])
    rows = Delivery.objects.using(broker_db()).filter(message_id=msg_id, status__in=statuses)
    if group is not None:
        rows = rows.filter(consumer_group=group)
    return replay_many(rows.values_list("pk", flat=True), statuses=statuses, actor=actor)


def replay_many(
    delivery_ids: Iterable[int], *, statuses: Iterable[str] = (Status.DEAD,), actor: str = ""
) -> int:
    """Make the given deliveries due now if they are still in one of ``statuses`` (DEAD by
    default), in one transaction with one wake-up. Returns how many were replayed."""
    db = broker_db()
    statuses = list(statuses)
    now = timezone.now()
    with transaction.atomic(using=db):
        picked = list(
            Delivery.objects.using(db)
            .filter(pk__in=list(delivery_ids), status__in=statuses)
            .select_for_update()
            .values_list("pk", "message_id", "consumer_group", "status")
        )
        if not picked:
            return 0
        Delivery.objects.using(db).filter(pk__in=[p[0] for p in picked], status__in=statuses).update(
            status=Status.PENDING, next_attempt_at=now, updated_at=now, claim_token="", claimed_until=None
        )
        trace_many(
            TraceEvent(
                message_id=msg_id,
                event=Event.REPLAY,
                consumer_group=grp,
                actor=actor,
                detail=f"{status} -> PENDING{' (forced)' if status == Status.SUCCEEDED else ''}",
            )
            for _, msg_id, grp, status in picked
        )
        from txbroker.transitions import wake_deliveries

        transaction.on_commit(wake_deliveries, using=db)
    return len(picked)


# --- sweep --------------------------------------------------------------------------------
@dataclass
class SweepReport:
    reclaimed: int = 0
    due: int = 0
    enqueued: int = 0


def sweep(*, max_tasks: int = 64) -> SweepReport:
    """Take back expired claims, then enqueue enough delivery tasks for every due delivery.

    Tasks carry no delivery ids: each claims whatever is due, so a lost, duplicated or
    late task costs one query and never loses or doubles a delivery.
    """
    from txbroker.tasks import deliver

    report = SweepReport(reclaimed=reclaim_expired())
    db = broker_db()
    size = txsettings.BATCH_SIZE
    # Count only as far as the tasks we may enqueue cover (bounded, uses the partial index).
    report.due = len(Delivery.objects.using(db).due().values_list("pk", flat=True)[: size * max_tasks])
    tasks = min(max_tasks, -(-report.due // size))
    for _ in range(tasks):
        deliver.delay()
        report.enqueued += 1
    return report
