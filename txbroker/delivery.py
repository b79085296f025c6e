"""Delivery to consumer groups, the worker's side: claim due deliveries in batches and run
each handler in one database transaction together with marking its delivery done; and the
sweep, which takes back expired claims and wakes workers for every due delivery. The moves
themselves (claim, start, success, failure, release, reclaim, replay), each one
conditional UPDATE, are in txbroker.delivery_transitions.

Exactly once: the handler's writes and the move to SUCCEEDED commit together, and only
while the claim is still this worker's (the row is locked and its claim token checked in
the same transaction). A second run of the same delivery finds it SUCCEEDED, or finds the
claim gone and rolls its handler back.

Poison messages: an attempt counts when its handler *starts*, committed before the
handler runs. A handler that kills its worker (a segfault, the OOM killer, ``os._exit``)
leaves its delivery RUNNING and started: the sweep takes it back as a failed attempt,
with its retry delay, and it ends DEAD after ``max_reconsume_times`` like any failure.
Batch-mates claimed with it but never started go back due now, their counts unchanged.

A worker that lost its claim records nothing about that delivery (no trace row, no
metric, not in its report).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, transaction

from txbroker import fastpath, tracing
from txbroker.conf import txsettings
from txbroker.db import broker_db, recover_connections
from txbroker.delivery_transitions import (
    ClaimLost,
    claim_due,
    log_fields,
    mark_failed,
    mark_succeeded,
    reclaim_expired,
    release,
    start_attempt,
)
from txbroker.exceptions import NoConsumer
from txbroker.faults import fault_error, fault_point, poison_identity, poison_point
from txbroker.metrics import observe_delivery
from txbroker.models import Delivery
from txbroker.ordering import claimable
from txbroker.registry import Consumer, registry
from txbroker.remote_deliveries import remote_reclaim_expired
from txbroker.timeouts import STOP_EXCEPTIONS, TimeLimitExceeded, time_limit
from txbroker.types import ConsumedMessage
from txbroker.wakeup import publish

logger = logging.getLogger("txbroker.delivery")

Status = Delivery.Status

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
    handlers go to other workers at once; returns False then. With
    TXBROKER_BATCH_TRANSACTION, in as few transactions as its budget allows (txbroker.batch)."""
    from txbroker import batch as together  # it builds on this module

    if together.enabled():
        return together.run_together(batch, token, report, deadline=deadline)
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


def _lock_claim(delivery: Delivery, token: str) -> bool:
    """Lock the delivery's row, to the end of the caller's transaction, if the claim is
    still ``token``'s: from then to commit nobody else can take it back."""
    db = broker_db()
    still_ours = fastpath.lock_claim(db, delivery.pk, token)
    if still_ours is None:
        still_ours = (
            Delivery.objects.using(db)
            .select_for_update()
            .filter(pk=delivery.pk, claim_token=token, status=Status.RUNNING)
            .exists()
        )
    return still_ours


def run_claimed(delivery: Delivery, token: str, report: BatchReport) -> str:
    """Run one claimed delivery's handler; returns the delivery's new status, or
    "SKIPPED" when the claim was no longer this worker's.

    The start is committed first (the attempt counts). Success: one transaction holds the
    row lock (the claim checked), the handler's writes, and the move to SUCCEEDED with its
    trace row; they commit together. Failure: that transaction rolls back (the handler's
    writes with it) and the failure is recorded in a second one, by the same conditional
    UPDATE on the claim token.
    """
    message = delivery.message
    consumer = registry.consumer_for(message.topic, delivery.consumer_group)
    attempt = start_attempt(delivery, token)
    if not attempt:
        report.skipped += 1
        return "SKIPPED"
    delivery.attempts = attempt
    with tracing.processing(message, delivery.consumer_group, attempt) as span:
        status, elapsed_ms, succeeded_at = _run_started(consumer, delivery, token, span)
        tracing.outcome(span, status)
    if status == "SKIPPED":
        _log_claim_lost(delivery)
        report.skipped += 1
        return status
    count_attempt(delivery, status, elapsed_ms, succeeded_at, report)
    return status


def count_attempt(
    delivery: Delivery, status: str, elapsed_ms: float, succeeded_at: Optional[datetime], report: BatchReport
) -> None:
    """Count a committed attempt: the worker's report and metrics, then the fault point of
    a worker dying after its delivery committed."""
    if status == Status.SUCCEEDED:
        report.succeeded += 1
    else:
        report.failed += 1
        report.dead += status == Status.DEAD
    report.durations_ms.append(elapsed_ms)
    observe_delivery(delivery.consumer_group, status, elapsed_ms, delivery.message.resolved_at, succeeded_at)
    fault_point("handler_after_commit")


def _run_started(
    consumer: Optional[Consumer], delivery: Delivery, token: str, span: object
) -> tuple[str, float, Optional[datetime]]:
    """Run a started attempt: its status ("SKIPPED": the claim was lost), how long it took
    and when it succeeded (database time)."""
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            _atomic_all(stack, _handler_databases())
            # Lock the row and check the claim is still ours: from here to commit, nobody
            # else can take it back, and a second runner waits, then finds it done.
            if not _lock_claim(delivery, token):
                raise ClaimLost
            _call_handler(consumer, delivery)
            elapsed_ms = (time.monotonic() - started) * 1000
            succeeded_at = mark_succeeded(delivery, token, elapsed_ms)
        return Status.SUCCEEDED, elapsed_ms, succeeded_at
    except ClaimLost:
        return "SKIPPED", (time.monotonic() - started) * 1000, None
    except (_HandlerFailed, *STOP_EXCEPTIONS) as failed:
        elapsed_ms = (time.monotonic() - started) * 1000
        error = failed.error if isinstance(failed, _HandlerFailed) else failed
        status = mark_failed(delivery, token, consumer, error, elapsed_ms)
        if isinstance(failed, STOP_EXCEPTIONS):
            raise
        if status is None:  # the claim was taken back meanwhile: not ours to record
            return "SKIPPED", elapsed_ms, None
        tracing.failed(span, error, outcome=status)
        return status, elapsed_ms, None


def _log_claim_lost(delivery: Delivery) -> None:
    topic = delivery.message.topic if Delivery.message.is_cached(delivery) else ""
    logger.warning(
        "delivery %s of message %s to %s: this worker lost its claim while running it (it stalled "
        "past TXBROKER_CLAIM_TIMEOUT, or its database session was ended); its attempt is void",
        delivery.pk,
        delivery.message_id,
        delivery.consumer_group,
        extra=log_fields(delivery.message_id, topic, delivery.consumer_group, delivery.attempts),
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
    # Remote (gRPC) groups' expired invisibility too: txbroker.remote_deliveries.
    report = SweepReport(reclaimed=reclaim_expired() + remote_reclaim_expired())
    db = broker_db()
    size = txsettings.BATCH_SIZE
    # Count only as far as the tasks we may enqueue cover (bounded, uses the partial index).
    # Ordered deliveries waiting behind an earlier one of their message group are not
    # claimable: counting them would enqueue tasks that find nothing, every sweep.
    due = Delivery.objects.using(db).due().filter(claimable(registry.groups_blocking_on_dead()))
    report.due = len(due.values_list("pk", flat=True)[: size * max_tasks])
    tasks = min(max_tasks, -(-report.due // size))
    for _ in range(tasks):
        publish()
        report.enqueued += 1
    return report
