"""One check-back pass: lease due HALF messages, ask their producer group's checker, settle.

A pass leases bounded batches (``FOR UPDATE SKIP LOCKED``, then a lease token and its end
in ``next_check_at``: concurrent passes never check one message at once), so its cost grows
with the number of due messages, not with the size of the table. Then it checks each
message in its own short transaction: the checker runs in a savepoint of it, the answer
settles the message in it, and the commit releases whatever the checker locked (an order
row, say) as soon as that message is settled. No lock is held across messages.

Every checker call is bounded (TXBROKER_CHECK_TIMEOUT, see txbroker.timeouts): an overrun
is an UNKNOWN answer for that message only. A check counts only when a checker was asked
and answered or failed; a pass stops cleanly at its time budget (the rest of its lease is
released, due now); Celery's soft time limit ends the pass and is never taken as an
answer. A pass that dies or freezes holding a lease delays its messages by the lease at
most (TXBROKER_CHECK_INTERVAL + TXBROKER_CHECK_TIMEOUT), uncounted.

Remote producer groups (RocketMQ clients over gRPC) with no checker here are left to the
txbroker_grpc process that holds a live client's telemetry stream (txbroker.grpcapi.checks);
with no live client anywhere they are leased here and skipped, uncounted, as any group
without a checker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Optional

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, transaction

from txbroker import tracing
from txbroker.conf import txsettings
from txbroker.db import broker_db, recover_connections
from txbroker.faults import fault_block
from txbroker.metrics import observe_check_pass
from txbroker.models import GrpcClient, LocalTransactionState, Message, TraceEvent
from txbroker.producer import as_state
from txbroker.registry import registry
from txbroker.timeouts import STOP_EXCEPTIONS, TimeLimitExceeded, bound_transaction, time_limit
from txbroker.trace import trimmed_traceback
from txbroker.transitions import (
    message_check_skipped,
    message_commit,
    message_discard,
    message_postpone,
    message_rollback,
    messages_claim_for_check,
    messages_release_check,
)
from txbroker.types import MessageView

logger = logging.getLogger("txbroker.checkback")

Event = TraceEvent.Event


@dataclass
class CheckReport:
    checked: int = 0
    outcomes: Counter = field(default_factory=Counter)  # COMMITTED, ROLLED_BACK, UNKNOWN, DISCARDED, ...
    # Leased but not checked (the budget ran out): due again at once, uncounted.
    released: int = 0

    def as_dict(self) -> dict:
        return {"checked": self.checked, "outcomes": dict(self.outcomes), "released": self.released}


@dataclass(frozen=True)
class _Limits:
    interval: float
    check_max: int
    timeout: float
    lease: float
    deadline: float  # time.monotonic() at which the pass stops


def check_pass(*, max_batches: int = 100, budget: Optional[float] = None, progress=None) -> CheckReport:
    """Run one check-back pass over the HALF messages that are due (database time), for at
    most ``budget`` seconds (TXBROKER_CHECK_PASS_BUDGET)."""
    report = CheckReport()
    budget = txsettings.CHECK_PASS_BUDGET if budget is None else budget
    timeout = txsettings.CHECK_TIMEOUT
    limits = _Limits(
        interval=txsettings.CHECK_INTERVAL,
        check_max=txsettings.CHECK_MAX,
        timeout=timeout,
        lease=txsettings.CHECK_INTERVAL + timeout,
        deadline=time.monotonic() + budget,
    )
    try:
        for _ in range(max_batches):
            claimed, finished = _check_batch(report, limits)
            if progress is not None:
                progress(report)
            if time.monotonic() >= limits.deadline or (finished and claimed < txsettings.CHECK_BATCH_SIZE):
                break
    finally:
        observe_check_pass(report.outcomes)
    return report


def _check_batch(report: CheckReport, limits: _Limits) -> tuple[int, bool]:
    """Lease and check one batch; returns how many it leased and whether it checked them
    all (False: it gave back the rest, short of budget or lease)."""
    token, batch = messages_claim_for_check(
        limit=txsettings.CHECK_BATCH_SIZE, lease=limits.lease, exclude_groups=_remote_groups()
    )
    leased_at = time.monotonic()
    for index, message in enumerate(batch):
        now = time.monotonic()
        # Stop before a check that could outlive the pass's budget or the batch's lease
        # (past the lease another pass may hold the message).
        if now >= limits.deadline or now - leased_at + limits.timeout > limits.lease:
            report.released += messages_release_check([m.msg_id for m in batch[index:]], token)
            return len(batch), False
        try:
            _check_one(message, token, report, limits)
        except STOP_EXCEPTIONS:
            # The task's soft time limit: this check does not count; give back the rest.
            report.released += messages_release_check([m.msg_id for m in batch[index:]], token)
            raise
        except (OperationalError, InterfaceError):
            # The session is gone (a restart, or this process froze past
            # idle_in_transaction_session_timeout): the check is void, the pass ends; the
            # lease runs out by itself if the rest cannot be given back.
            logger.warning("lost the database session during a check; the pass ends", exc_info=True)
            recover_connections()
            try:
                report.released += messages_release_check([m.msg_id for m in batch[index:]], token)
            except (OperationalError, InterfaceError):
                pass
            return 0, True
    return len(batch), True


def _remote_groups() -> set[str]:
    """Producer groups with no checker here whose live gRPC producers a txbroker_grpc process
    streams to: that process checks them (txbroker.grpcapi.checks), not this pass."""
    streaming = GrpcClient.objects.using(broker_db()).streaming_producer_groups(
        txsettings.GRPC_CLIENT_TIMEOUT
    )
    return streaming - set(registry.producer_groups())


def _transaction_databases() -> list[str]:
    """txbroker's database, and the checkers' (``default``) when txbroker has its own."""
    db = broker_db()
    return [db] if db == DEFAULT_DB_ALIAS else [db, DEFAULT_DB_ALIAS]


def _check_one(message: Message, token: str, report: CheckReport, limits: _Limits) -> None:
    checker = registry.checker_for(message.producer_group)
    if checker is None:
        # Not a real check: the count stays, so the message is never discarded unchecked.
        message_check_skipped(
            message,
            token=token,
            delay=limits.interval,
            detail=f"no checker registered for producer group {message.producer_group!r} in this "
            "process; not counted",
        )
        report.outcomes["NO_CHECKER"] += 1
        return

    check_times = message.check_times + 1
    with ExitStack() as stack:
        span = stack.enter_context(tracing.checking(message, check_times))
        # One short transaction per message: the checker's locks end with its settlement.
        for alias in _transaction_databases():
            stack.enter_context(transaction.atomic(using=alias))
            bound_transaction(alias, limits.timeout)
        state, detail = _ask(checker, message, limits.timeout)
        check_event = TraceEvent(
            message_id=message.msg_id,
            event=Event.CHECK,
            detail=f"check {check_times}/{limits.check_max}: {detail}",
        )
        settled = {"prelude": [check_event], "check_token": token}
        if state == LocalTransactionState.COMMIT:
            outcome = "COMMITTED"
            moved = message_commit(message, by="check-back", check_times=check_times, **settled)
        elif state == LocalTransactionState.ROLLBACK:
            outcome = "ROLLED_BACK"
            moved = message_rollback(message, by="check-back", check_times=check_times, **settled)
        elif check_times >= limits.check_max:
            outcome = "DISCARDED"
            moved = message_discard(message, check_times=check_times, **settled)
        else:
            outcome = "UNKNOWN"
            moved = message_postpone(message, check_times=check_times, delay=limits.interval, **settled)
        tracing.outcome(span, outcome if moved else "LEASE_LOST")
    if moved:
        report.checked += 1
        report.outcomes[outcome] += 1
    # else: the lease was lost (this pass ran past it, or the producer settled the message
    # meanwhile): this pass records nothing about the message.


def _ask(checker, message: Message, timeout: float) -> tuple[LocalTransactionState, str]:
    """The checker's answer and its trace text; UNKNOWN when it raised, answered nothing
    or ran out of time."""
    started = time.monotonic()
    try:
        # A savepoint: a checker that breaks its database work (or is interrupted) cannot
        # break the settlement that follows in the same transaction.
        limit = time_limit(timeout, lambda: TimeLimitExceeded(f"checker ran past {timeout:g}s"))
        with transaction.atomic(using=DEFAULT_DB_ALIAS), limit:
            fault_block("checker_block")
            answer = checker(MessageView.of(message))
    except STOP_EXCEPTIONS:
        raise
    except Exception as exc:
        elapsed = time.monotonic() - started
        if isinstance(exc, TimeLimitExceeded) or _timed_out_in_database(exc, elapsed, timeout):
            logger.warning("checker for message %s ran past %gs: UNKNOWN", message.msg_id, timeout)
            return (
                LocalTransactionState.UNKNOWN,
                f"UNKNOWN (timed out after {elapsed:.1f} s, limit {timeout:g} s)",
            )
        logger.warning("checker for message %s raised", message.msg_id, exc_info=True)
        return LocalTransactionState.UNKNOWN, "UNKNOWN (raised)\n" + trimmed_traceback(exc)
    elapsed_ms = (time.monotonic() - started) * 1000
    state = as_state(answer)
    if state is None:
        return (
            LocalTransactionState.UNKNOWN,
            f"UNKNOWN (no answer: returned {answer!r}) ({elapsed_ms:.1f} ms)",
        )
    return state, f"{state.value} ({elapsed_ms:.1f} ms)"


def _timed_out_in_database(exc: BaseException, elapsed: float, timeout: float) -> bool:
    """A lock wait or statement the database cancelled at the check's bound."""
    return isinstance(exc, OperationalError) and elapsed >= timeout * 0.9
