"""One check-back pass: claim due HALF messages, ask their producer group's checker, settle.

A pass claims bounded batches with ``SELECT ... FOR UPDATE SKIP LOCKED`` (concurrent passes
never check one message at once), so its cost grows with the number of due messages, not
with the size of the table. A check counts only when a checker was actually asked; a
checker that raises is UNKNOWN for that message only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from txbroker.conf import txsettings
from txbroker.metrics import observe_check_pass
from txbroker.models import LocalTransactionState, Message, TraceEvent
from txbroker.producer import as_state, trimmed_traceback
from txbroker.registry import registry
from txbroker.transitions import (
    broker_db,
    message_commit,
    message_discard,
    message_postpone,
    message_rollback,
    trace,
)
from txbroker.types import MessageView

logger = logging.getLogger("txbroker.checkback")

Event = TraceEvent.Event


@dataclass
class CheckReport:
    checked: int = 0
    outcomes: Counter = field(default_factory=Counter)  # COMMITTED, ROLLED_BACK, UNKNOWN, DISCARDED, ...

    def as_dict(self) -> dict:
        return {"checked": self.checked, "outcomes": dict(self.outcomes)}


def check_pass(*, max_batches: int = 100, now=None, progress=None) -> CheckReport:
    """Run one check-back pass over every HALF message that is due."""
    report = CheckReport()
    started = now or timezone.now()
    for _ in range(max_batches):
        claimed = _check_batch(report, started)
        if progress is not None:
            progress(report)
        if claimed < txsettings.CHECK_BATCH_SIZE:
            break
    observe_check_pass(report.outcomes)
    return report


def _check_batch(report: CheckReport, now) -> int:
    db = broker_db()
    interval = timedelta(seconds=txsettings.CHECK_INTERVAL)
    check_max = txsettings.CHECK_MAX
    with transaction.atomic(using=db):
        batch = list(
            Message.objects.using(db)
            .due_for_check(now)
            .select_for_update(skip_locked=True)
            .order_by("next_check_at")[: txsettings.CHECK_BATCH_SIZE]
        )
        for message in batch:
            _check_one(message, report, interval, check_max)
    return len(batch)


def _check_one(message: Message, report: CheckReport, interval: timedelta, check_max: int) -> None:
    db = broker_db()
    checker = registry.checker_for(message.producer_group)
    if checker is None:
        # Not a real check: the count stays, so the message is never discarded unchecked.
        Message.objects.using(db).filter(pk=message.pk, state=Message.State.HALF).update(
            next_check_at=timezone.now() + interval
        )
        trace(
            message.msg_id,
            Event.CHECK_SKIPPED,
            f"no checker registered for producer group {message.producer_group!r} in this "
            "process; not counted",
        )
        report.outcomes["NO_CHECKER"] += 1
        return

    check_times = message.check_times + 1
    started = time.monotonic()
    try:
        # A savepoint: a checker that breaks its database work cannot break the pass.
        with transaction.atomic(using=db):
            answer = checker(MessageView.of(message))
        state = as_state(answer)
        detail = state.value if state else f"UNKNOWN (no answer: returned {answer!r})"
        state = state or LocalTransactionState.UNKNOWN
    except Exception as exc:
        logger.warning("checker for message %s raised", message.msg_id, exc_info=True)
        state = LocalTransactionState.UNKNOWN
        detail = "UNKNOWN (raised)\n" + trimmed_traceback(exc)
    elapsed_ms = (time.monotonic() - started) * 1000
    report.checked += 1
    check_event = TraceEvent(
        message_id=message.msg_id,
        event=Event.CHECK,
        detail=f"check {check_times}/{check_max}: {detail} ({elapsed_ms:.1f} ms)",
    )
    if state == LocalTransactionState.COMMIT:
        message_commit(message, by="check-back", prelude=[check_event], check_times=check_times)
        report.outcomes["COMMITTED"] += 1
    elif state == LocalTransactionState.ROLLBACK:
        message_rollback(message, by="check-back", prelude=[check_event], check_times=check_times)
        report.outcomes["ROLLED_BACK"] += 1
    elif check_times >= check_max:
        message_discard(message, check_times=check_times, prelude=[check_event])
        report.outcomes["DISCARDED"] += 1
    else:
        message_postpone(
            message, check_times=check_times, delay=interval.total_seconds(), prelude=[check_event]
        )
        report.outcomes["UNKNOWN"] += 1
