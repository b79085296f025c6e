"""A claimed batch's handlers in one transaction (TXBROKER_BATCH_TRANSACTION, on PostgreSQL
with the fast path): what txbroker.delivery does per delivery, done per batch.

1. One statement starts the handlers of the batch (each attempt counts) and renews their
   claims; it commits before any handler runs.
2. One transaction (on the handlers' databases too, see ``_handler_databases``) locks
   the batch's rows whose claim is still this worker's (one ``FOR UPDATE``: from then to
   commit nobody can take them back), then runs each handler in a savepoint, bounded by
   TXBROKER_HANDLER_TIMEOUT. A failing handler rolls back to its savepoint and its failed
   attempt is recorded (RETRY or DEAD, with its trace rows) in the same transaction; the
   others are not disturbed. One statement then settles every delivery whose handler
   succeeded (each with its handler's time), and the transaction commits: the handlers'
   writes and their deliveries' moves together, exactly once.

Longer transactions can deadlock with each other on the handlers' rows (two batches
updating the same two rows in opposite orders). A handler that loses a deadlock, unless it
ran first in its transaction, rolls back to its savepoint and is no failed attempt: what
ran before it commits (its locks go) and it runs again first in the next transaction.

The bound: a transaction stops taking handlers once it has been open
TXBROKER_BATCH_TRANSACTION_BUDGET seconds (or the worker is stopping, or the task's
budget is spent). What ran commits; the deliveries it did not reach have their start
undone in that transaction and go to the next one (or are released). So a delivery's
commit waits at most that budget plus one handler (TXBROKER_HANDLER_TIMEOUT).

A worker that dies mid-transaction leaves every delivery of it started and uncommitted:
which handler killed it is unknown, so the sweep gives them all back due now, their
starts undone, to run alone from then on (txbroker.delivery_transitions.reclaim_expired),
where a death counts an attempt as in txbroker.delivery. A poison message thus dies once
uncounted in its first batch, then ``max_reconsume_times + 1`` times alone; its
batch-mates keep their attempt counts.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import datetime
from typing import Optional

from django.db import InterfaceError, OperationalError
from django.db.transaction import TransactionManagementError

from txbroker import fastpath, tracing
from txbroker.conf import txsettings
from txbroker.db import broker_db, recover_connections
from txbroker.delivery import (
    BatchReport,
    _atomic_all,
    _call_handler,
    _handler_databases,
    _HandlerFailed,
    _log_claim_lost,
    count_attempt,
    logger,
    stopping,
)
from txbroker.delivery_transitions import ClaimLost, mark_failed, release
from txbroker.models import Delivery
from txbroker.registry import registry
from txbroker.timeouts import STOP_EXCEPTIONS

Status = Delivery.Status
SESSION_LOST = (OperationalError, InterfaceError, TransactionManagementError)
# A handler that lost a deadlock (or a serialization failure) to another batch's
# transaction: the locks its batch-mates hold are the likely cause, not the handler.
CONFLICTS = ("40P01", "40001")
CONFLICT = "CONFLICT"


def _conflict(error: BaseException) -> bool:
    while error is not None:
        if getattr(error, "sqlstate", None) in CONFLICTS or getattr(error, "pgcode", None) in CONFLICTS:
            return True
        error = error.__cause__
    return False


def enabled() -> bool:
    return txsettings.BATCH_TRANSACTION and fastpath.enabled(broker_db())


def run_together(
    batch: list[Delivery], token: str, report: BatchReport, *, deadline: Optional[float] = None
) -> bool:
    """Run a claimed batch, in order, in as few transactions as the budget allows. Gives
    back what it has not started when the worker is stopping or ``deadline`` is spent
    (returns False then), as txbroker.delivery.run_batch does."""
    rest = list(batch)
    size = len(rest)
    while rest:
        if stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
            report.released += release(rest, token)
            return False
        try:
            left = _run_chunk(rest[:size], token, report, deadline)
        except STOP_EXCEPTIONS:
            report.released += release(rest, token)
            raise
        except SESSION_LOST:
            logger.warning("lost the database session mid-batch; releasing the rest", exc_info=True)
            recover_connections()
            try:
                report.released += release(rest, token)
            except SESSION_LOST:
                logger.warning("could not release the rest of the batch; their claims will expire")
            return False
        taken = min(size, len(rest))
        rest = left + rest[taken:]
        # Start no more than twice what the last transaction got through in its budget.
        size = max(1, 2 * (taken - len(left)))
    return True


def _run_chunk(
    chunk: list[Delivery], token: str, report: BatchReport, deadline: Optional[float]
) -> list[Delivery]:
    """Start ``chunk`` and run as much of it as the budget allows in one transaction;
    returns those it did not reach (started no more: for the next transaction)."""
    db = broker_db()
    started = fastpath.batch_start(db, [d.pk for d in chunk], token, claim_timeout=txsettings.CLAIM_TIMEOUT)
    report.skipped += len(chunk) - len(started)
    mine = [d for d in chunk if d.pk in started]
    for delivery in mine:
        delivery.attempts = started[delivery.pk]
    done: list[tuple[Delivery, str, float]] = []
    left: list[Delivery] = []
    interrupted: Optional[BaseException] = None
    try:
        with ExitStack() as stack:
            opened = time.monotonic()
            _atomic_all(stack, _handler_databases())
            locked = fastpath.batch_lock(db, [d.pk for d in mine], token) if mine else set()
            for delivery in mine:
                if delivery.pk not in locked:
                    _log_claim_lost(delivery)
                    report.skipped += 1
            mine = [d for d in mine if d.pk in locked]
            for index, delivery in enumerate(mine):
                late = time.monotonic() - opened >= txsettings.BATCH_TRANSACTION_BUDGET
                if index and (
                    late or stopping.is_set() or (deadline is not None and time.monotonic() >= deadline)
                ):
                    left = mine[index:]
                    break
                status, elapsed_ms, interrupted = _run_one(delivery, token, first=not index)
                if status == CONFLICT:  # commit what ran (its locks go), then run it again
                    left = mine[index:]
                    break
                done.append((delivery, status, elapsed_ms))
                if interrupted is not None:
                    left = mine[index + 1 :]
                    break
            if left:
                fastpath.batch_unstart(db, [d.pk for d in left], token)
            succeeded_at = _settle(
                db, token, [(d, ms) for d, status, ms in done if status == Status.SUCCEEDED]
            )
    except (ClaimLost, *SESSION_LOST) as lost:
        # Nothing of this transaction committed: its attempts are void, not this worker's
        # to record (its session was ended, e.g. it froze past the idle-in-transaction
        # timeout and its claims went to another worker; or, ruled out by the row locks,
        # a claim was taken back).
        for delivery in mine:
            _log_claim_lost(delivery)
        report.skipped += len(mine)
        if isinstance(lost, ClaimLost):
            return []
        raise
    for delivery, status, elapsed_ms in done:
        count_attempt(delivery, status, elapsed_ms, succeeded_at.get(delivery.pk), report)
    if interrupted is not None:
        raise interrupted
    return left


def _run_one(delivery: Delivery, token: str, *, first: bool) -> tuple[str, float, Optional[BaseException]]:
    """One handler in its savepoint: its status, time, and the stop exception (the task's
    soft time limit) that interrupted it, to raise once the transaction committed. A
    handler that lost a deadlock while not ``first`` of its transaction is no failed
    attempt: CONFLICT, it runs again first of the next transaction (where a deadlock is
    its own, a failure)."""
    message = delivery.message
    consumer = registry.consumer_for(message.topic, delivery.consumer_group)
    with tracing.processing(message, delivery.consumer_group, delivery.attempts) as span:
        started = time.monotonic()
        try:
            with ExitStack() as savepoint:
                _atomic_all(savepoint, _handler_databases())
                _call_handler(consumer, delivery)
        except (_HandlerFailed, *STOP_EXCEPTIONS) as failed:
            elapsed_ms = (time.monotonic() - started) * 1000
            error = failed.error if isinstance(failed, _HandlerFailed) else failed
            if not first and isinstance(failed, _HandlerFailed) and _conflict(error):
                tracing.outcome(span, CONFLICT)
                return CONFLICT, elapsed_ms, None
            # In the batch's transaction, which holds the row: the claim is still ours.
            status = mark_failed(delivery, token, consumer, error, elapsed_ms)
            if status is None:
                raise ClaimLost from failed
            tracing.failed(span, error, outcome=status)
            tracing.outcome(span, status)
            return status, elapsed_ms, None if isinstance(failed, _HandlerFailed) else failed
        tracing.outcome(span, Status.SUCCEEDED)
        return Status.SUCCEEDED, (time.monotonic() - started) * 1000, None


def _settle(db: str, token: str, succeeded: list[tuple[Delivery, float]]) -> dict[int, datetime]:
    """RUNNING -> SUCCEEDED of every delivery whose handler succeeded, each with its
    handler's time, in one statement; raises ClaimLost (rolling the batch back) if one did
    not move, which the rows' locks rule out."""
    if not succeeded:
        return {}
    moved = fastpath.batch_succeed(db, {d.pk: ms for d, ms in succeeded}, token)
    if len(moved) != len(succeeded):
        raise ClaimLost
    return moved
