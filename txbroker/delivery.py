"""Delivery to consumer groups: claim due deliveries in batches, run each handler in one
database transaction together with marking its delivery done, retry, dead letters.

Every state move of a Delivery is here, each one conditional UPDATE:

    PENDING | RETRY --claim--> RUNNING --start (attempt counted)--> handler
        handler --success--> SUCCEEDED
                --failure--> RETRY (after a delay) | DEAD
    RUNNING, claim expired: never started --> RETRY, due now (attempts unchanged)
                            started, its worker died or froze --> RETRY (after a delay) | DEAD
    RUNNING, released (worker stopping), never started --> RETRY, due now
    DEAD | RETRY (| SUCCEEDED with force) --replay--> PENDING, due now

Exactly once: the handler's writes and the move to SUCCEEDED commit together, and only
while the claim is still this worker's (the row is locked and its claim token checked in
the same transaction). A second run of the same delivery finds it SUCCEEDED, or finds the
claim gone and rolls its handler back.

Poison messages: an attempt counts when its handler *starts*, committed before the
handler runs. A handler that kills its worker (a segfault, the OOM killer, ``os._exit``)
leaves its delivery RUNNING and started: the sweep takes it back as a failed attempt,
with its retry delay, and it ends DEAD after ``max_reconsume_times`` like any failure.
Batch-mates claimed with it but never started go back due now, their counts unchanged.

Every time is the database's clock (txbroker.dbtime); a worker that lost its claim
records nothing about that delivery (no trace row, no metric, not in its report).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Optional

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, transaction

from txbroker import dbtime, fastpath
from txbroker.conf import txsettings
from txbroker.db import broker_db, recover_connections
from txbroker.exceptions import NoConsumer
from txbroker.faults import fault_error, fault_point, poison_identity, poison_point
from txbroker.metrics import observe_delivery, observe_worker_lost
from txbroker.models import Delivery, TraceEvent
from txbroker.registry import Consumer, registry
from txbroker.timeouts import STOP_EXCEPTIONS, TimeLimitExceeded, time_limit
from txbroker.trace import trace_many, trimmed_traceback
from txbroker.types import ConsumedMessage

logger = logging.getLogger("txbroker.delivery")

Status = Delivery.Status
Event = TraceEvent.Event

WORKER_LOST = "worker died during the handler"

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
    # Claims this worker found taken back before it could start or finish them.
    skipped: int = 0
    released: int = 0
    durations_ms: list[float] = field(default_factory=list)
    # The budget ran out with deliveries claimed or due: more work is probably waiting.
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
def claim_due(
    limit: int, *, ids: Optional[Iterable[int]] = None, alone: bool = False
) -> tuple[str, list[Delivery]]:
    """Claim up to ``limit`` due deliveries (oldest first) for this worker: one transaction,
    ``FOR UPDATE SKIP LOCKED`` so concurrent workers never claim the same row. A claim
    lasts TXBROKER_CLAIM_TIMEOUT (database time); it counts no attempt. ``alone``: claim
    among the deliveries that run alone (a worker died running them) instead of the rest."""
    db = broker_db()
    token = uuid.uuid4().hex
    timeout = txsettings.CLAIM_TIMEOUT
    # PostgreSQL: the SKIP LOCKED pick and the move to RUNNING in one statement (see
    # txbroker.fastpath); elsewhere the same two steps in one transaction.
    picked = fastpath.claim_due(
        db,
        token=token,
        claim_timeout=timeout,
        limit=limit,
        ids=None if ids is None else list(ids),
        alone=alone,
    )
    if picked is None:
        with transaction.atomic(using=db):
            due = Delivery.objects.using(db).due().filter(run_alone=alone)
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
                    claimed_until=dbtime.after(timeout),
                    started_at=None,
                    updated_at=dbtime.now(),
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


def reclaim_expired() -> int:
    """Take back claims that ran out (database time): their worker died, froze, or is far
    behind. A delivery whose handler runs holds its row lock, so SKIP LOCKED leaves it
    alone; a frozen worker's lock is gone once PostgreSQL ended its session
    (idle_in_transaction_session_timeout).

    Never started: due again now, attempt count unchanged. Started (the handler was
    running when its worker died): a failed attempt, with its retry delay, DEAD after
    ``max_reconsume_times``.
    """
    db = broker_db()
    with transaction.atomic(using=db):
        expired = list(
            Delivery.objects.using(db)
            .claim_expired()
            .select_for_update(skip_locked=True)
            .values_list("pk", "message_id", "consumer_group", "attempts", "started_at", "claim_token")[:1000]
        )
        if not expired:
            return 0
        unstarted = [row for row in expired if row[4] is None]
        if unstarted:
            Delivery.objects.using(db).filter(
                pk__in=[row[0] for row in unstarted], status=Status.RUNNING
            ).update(
                status=Status.RETRY,
                claim_token="",
                claimed_until=None,
                next_attempt_at=dbtime.now(),
                updated_at=dbtime.now(),
            )
            trace_many(
                TraceEvent(
                    message_id=msg_id,
                    event=Event.RECLAIMED,
                    consumer_group=group,
                    detail="claim expired before the handler started; due again now (attempts unchanged)",
                )
                for _, msg_id, group, *_rest in unstarted
            )
        started = [row for row in expired if row[4] is not None]
        topics = dict(
            Delivery.objects.using(db)
            .filter(pk__in=[row[0] for row in started])
            .values_list("pk", "message__topic")
        )
        for pk, msg_id, group, attempts, _started_at, token in started:
            _fail_lost_worker(pk, msg_id, group, attempts, token, topics.get(pk, ""))
    return len(expired)


def _fail_lost_worker(pk: int, msg_id: str, group: str, attempts: int, token: str, topic: str) -> None:
    """A started delivery whose worker is gone: the attempt failed (inside reclaim's
    transaction, which holds the row)."""
    consumer = registry.consumer_for(topic, group)
    limit = max_reconsume_times(consumer)
    dead = attempts > limit
    error = f"{WORKER_LOST} (attempt {attempts}: the worker died or froze; its claim expired)"
    fields = {"status": Status.DEAD} if dead else {"status": Status.RETRY}
    if not dead:
        fields["next_attempt_at"] = dbtime.after(retry_delay(attempts))
    fields["run_alone"] = True  # it may kill its worker again: no batch-mate goes with it
    Delivery.objects.using(broker_db()).filter(pk=pk, claim_token=token, status=Status.RUNNING).update(
        claim_token="", claimed_until=None, last_error=error, updated_at=dbtime.now(), **fields
    )
    events = [
        TraceEvent(
            message_id=msg_id,
            event=Event.RECLAIMED,
            consumer_group=group,
            detail=f"attempt {attempts}: FAILED: {WORKER_LOST}"
            + ("" if dead else f"; retry in {retry_delay(attempts):g} s"),
        )
    ]
    if dead:
        events.append(
            TraceEvent(
                message_id=msg_id,
                event=Event.DEAD,
                consumer_group=group,
                detail=f"{attempts} attempts failed (max reconsume times {limit}); last error: {WORKER_LOST}",
            )
        )
        logger.error("delivery %s of message %s to %s is DEAD: %s", pk, msg_id, group, error)
    else:
        logger.warning("delivery %s of message %s to %s: %s; retried", pk, msg_id, group, error)
    trace_many(events)
    observe_worker_lost(group, fields["status"])


def release(deliveries: list[Delivery], token: str) -> int:
    """Give back claimed deliveries whose handler has not started (the worker is stopping,
    or its time budget ran out): due now, attempt counts unchanged. Traces only what it
    released."""
    if not deliveries:
        return 0
    db = broker_db()
    with transaction.atomic(using=db):
        released = list(
            Delivery.objects.using(db)
            .filter(
                pk__in=[d.pk for d in deliveries],
                claim_token=token,
                status=Status.RUNNING,
                started_at__isnull=True,
            )
            .select_for_update()
            .values_list("pk", "message_id", "consumer_group")
        )
        if not released:
            return 0
        Delivery.objects.using(db).filter(pk__in=[row[0] for row in released], claim_token=token).update(
            status=Status.RETRY,
            claim_token="",
            claimed_until=None,
            next_attempt_at=dbtime.now(),
            updated_at=dbtime.now(),
        )
        trace_many(
            TraceEvent(
                message_id=msg_id,
                event=Event.RELEASED,
                consumer_group=group,
                detail="released before its handler started; due again now",
            )
            for _, msg_id, group in released
        )
    return len(released)


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
            # A delivery whose worker died running it runs in a batch of its own first: if it
            # kills this worker too, nothing claimed with it waits a claim timeout.
            token, alone = claim_due(1, alone=True)
            report.claimed += len(alone)
            if alone and not run_batch(alone, token, report, deadline=deadline):
                report.more_due = not stopping.is_set()
                break
            token, batch = claim_due(size)
            report.claimed += len(batch)
            finished = run_batch(batch, token, report, deadline=deadline)
            if not finished:
                report.more_due = not stopping.is_set()
                break
            if len(batch) < size and not alone:
                break
            if time.monotonic() >= deadline:
                report.more_due = not stopping.is_set()
                break
    finally:
        in_batch.clear()
    return report


def run_batch(
    batch: list[Delivery], token: str, report: BatchReport, *, deadline: Optional[float] = None
) -> bool:
    """Run a claimed batch in order. Gives back what it has not started when the worker is
    stopping or the task's budget (``deadline``) is spent, so that batch-mates behind slow
    handlers go to other workers at once; returns False then."""
    for index, delivery in enumerate(batch):
        if stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
            report.released += release(batch[index:], token)
            return False
        try:
            run_claimed(delivery, token, report)
        except STOP_EXCEPTIONS:
            report.released += release(batch[index + 1 :], token)
            raise
        except (OperationalError, InterfaceError):
            # The session is gone (the database restarted, or this worker froze past
            # idle_in_transaction_session_timeout and lost it, and another worker may run
            # these deliveries now). Whatever this worker did not commit is void; give back
            # the rest on a new connection if it can, else their claims expire.
            logger.warning("lost the database session mid-batch; releasing the rest", exc_info=True)
            recover_connections()
            try:
                report.released += release(batch[index + 1 :], token)
            except (OperationalError, InterfaceError):
                logger.warning("could not release the rest of the batch; their claims will expire")
            return False
    return True


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


class _ClaimLost(Exception):
    """The claim was taken back before this worker could commit: roll everything back."""


def _start(delivery: Delivery, token: str) -> int:
    """Count the attempt and renew the claim, committed before the handler runs (so a
    handler that kills its worker is still counted). 0 when the claim is no longer ours."""
    db = broker_db()
    timeout = txsettings.CLAIM_TIMEOUT
    attempt = fastpath.delivery_start(db, delivery.pk, token, claim_timeout=timeout)
    if attempt is not None:
        return attempt
    with transaction.atomic(using=db):
        rows = Delivery.objects.using(db).filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING)
        if not rows.select_for_update().exists():
            return 0
        attempts = rows.values_list("attempts", flat=True).get() + 1
        rows.update(
            attempts=attempts,
            started_at=dbtime.now(),
            claimed_until=dbtime.after(timeout),
            updated_at=dbtime.now(),
        )
    return attempts


def run_claimed(delivery: Delivery, token: str, report: BatchReport) -> str:
    """Run one claimed delivery's handler; returns the delivery's new status, or
    "SKIPPED" when the claim was no longer this worker's.

    The start is committed first (the attempt counts). Success: one transaction holds the
    row lock (the claim checked), the handler's writes, and the move to SUCCEEDED with its
    trace row; they commit together. Failure: that transaction rolls back (the handler's
    writes with it) and the failure is recorded in a second one, by the same conditional
    UPDATE on the claim token.
    """
    db = broker_db()
    message = delivery.message
    consumer = registry.consumer_for(message.topic, delivery.consumer_group)
    attempt = _start(delivery, token)
    if not attempt:
        report.skipped += 1
        return "SKIPPED"
    delivery.attempts = attempt
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            _atomic_all(stack, _handler_databases())
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
                raise _ClaimLost
            _call_handler(consumer, delivery)
            elapsed_ms = (time.monotonic() - started) * 1000
            succeeded_at = _mark_succeeded(delivery, token, elapsed_ms)
        status = Status.SUCCEEDED
        report.succeeded += 1
    except _ClaimLost:
        _log_claim_lost(delivery)
        report.skipped += 1
        return "SKIPPED"
    except (_HandlerFailed, *STOP_EXCEPTIONS) as failed:
        elapsed_ms = (time.monotonic() - started) * 1000
        error = failed.error if isinstance(failed, _HandlerFailed) else failed
        status = _mark_failed(delivery, token, consumer, error, elapsed_ms)
        if isinstance(failed, STOP_EXCEPTIONS):
            raise
        if status is None:  # the claim was taken back meanwhile: not ours to record
            _log_claim_lost(delivery)
            report.skipped += 1
            return "SKIPPED"
        succeeded_at = None
        report.failed += 1
        report.dead += status == Status.DEAD
    report.durations_ms.append(elapsed_ms)
    observe_delivery(delivery.consumer_group, status, elapsed_ms, message.resolved_at, succeeded_at)
    fault_point("handler_after_commit")
    return status


def _log_claim_lost(delivery: Delivery) -> None:
    logger.warning(
        "delivery %s of message %s to %s: this worker lost its claim while running it (it stalled "
        "past TXBROKER_CLAIM_TIMEOUT, or its database session was ended); its attempt is void",
        delivery.pk,
        delivery.message_id,
        delivery.consumer_group,
    )


def _call_handler(consumer: Optional[Consumer], delivery: Delivery) -> None:
    """The consumer's handler, bounded by TXBROKER_HANDLER_TIMEOUT; any exception it raises
    (but the task's soft time limit) is a failed attempt."""
    message = delivery.message
    timeout = txsettings.HANDLER_TIMEOUT
    try:
        if consumer is None:
            raise NoConsumer(
                f"no consumer registered for group {delivery.consumer_group!r} on topic "
                f"{message.topic!r} in this worker (was it removed from the code?)"
            )
        poison_point(poison_identity(message.msg_id, message.keys))
        if delivery.attempts == 1:
            fault_error("handler_first_attempt_error")
        with time_limit(timeout, lambda: TimeLimitExceeded(f"handler ran past {timeout:g}s")):
            consumer.handler(
                ConsumedMessage.of(
                    message, consumer_group=delivery.consumer_group, reconsume_times=delivery.attempts - 1
                )
            )
        fault_point("handler_before_commit")
    except STOP_EXCEPTIONS:
        raise
    except Exception as exc:  # a failing handler is retried, never fatal
        raise _HandlerFailed(exc) from exc


def _mark_succeeded(delivery: Delivery, token: str, elapsed_ms: float):
    """RUNNING -> SUCCEEDED with its trace row; returns when (database time). Raises
    _ClaimLost (rolling the handler back) if the claim is gone, which the row lock taken
    in this transaction rules out."""
    db = broker_db()
    # Every attempt keeps its trace row (the operator's per-message history), written in
    # the same statement as the move on PostgreSQL, so it costs no extra round trip.
    event = TraceEvent(
        message_id=delivery.message_id,
        event=Event.DELIVERY_ATTEMPT,
        consumer_group=delivery.consumer_group,
        detail=f"attempt {delivery.attempts}: SUCCEEDED in {elapsed_ms:.1f} ms",
    )
    done = fastpath.delivery_succeed(db, delivery.pk, token, event=event)
    if done is not None:
        moved, succeeded_at = done
    else:
        rows = Delivery.objects.using(db).filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING)
        moved = bool(
            rows.update(
                status=Status.SUCCEEDED,
                claim_token="",
                claimed_until=None,
                succeeded_at=dbtime.now(),
                updated_at=dbtime.now(),
                last_error="",
                run_alone=False,
            )
        )
        succeeded_at = None
        if moved:
            trace_many([event])
            succeeded_at = (
                Delivery.objects.using(db).values_list("succeeded_at", flat=True).get(pk=delivery.pk)
            )
    if not moved:
        raise _ClaimLost
    return succeeded_at


def _mark_failed(
    delivery: Delivery,
    token: str,
    consumer: Optional[Consumer],
    error: BaseException,
    elapsed_ms: float,
) -> Optional[str]:
    """RUNNING -> RETRY (after its delay, database time) | DEAD, with its trace rows, in
    its own transaction (the handler's one has rolled back). Only while the claim is
    still ours: returns None, having written nothing, when it was taken back."""
    db = broker_db()
    limit = max_reconsume_times(consumer)
    text = trimmed_traceback(error)
    dead = delivery.attempts > limit
    status = Status.DEAD if dead else Status.RETRY
    delay = None if dead else retry_delay(delivery.attempts)
    summary = f"{type(error).__name__}: {error}"[:500]
    events = [
        TraceEvent(
            message_id=delivery.message_id,
            event=Event.DELIVERY_ATTEMPT,
            consumer_group=delivery.consumer_group,
            detail=(
                f"attempt {delivery.attempts}: FAILED in {elapsed_ms:.1f} ms: {summary}"
                + ("" if dead else f"; retry in {delay:g} s")
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
    moved = fastpath.delivery_fail(
        db, delivery.pk, token, status=status, delay=delay, error=text, events=events
    )
    if moved is None:
        with transaction.atomic(using=db):
            due = {} if delay is None else {"next_attempt_at": dbtime.after(delay)}
            moved = bool(
                Delivery.objects.using(db)
                .filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING)
                .update(
                    status=status,
                    claim_token="",
                    claimed_until=None,
                    last_error=text,
                    updated_at=dbtime.now(),
                    **due,
                )
            )
            if moved:
                trace_many(events)
    if not moved:
        return None
    if dead:
        logger.error(
            "delivery %s of message %s to %s is DEAD: %s",
            delivery.pk,
            delivery.message_id,
            delivery.consumer_group,
            summary,
            exc_info=error,
        )
    return status


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
            status=Status.PENDING,
            next_attempt_at=dbtime.now(),
            updated_at=dbtime.now(),
            claim_token="",
            claimed_until=None,
            started_at=None,
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
