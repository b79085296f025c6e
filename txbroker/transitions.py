"""Every state move of a Message, each one conditional UPDATE, in this one place.

Allowed: HALF -> COMMITTED | ROLLED_BACK | DISCARDED, and DISCARDED -> HALF (an operator's
resume). Anything else is refused, changes nothing, and is recorded in the trace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from txbroker import fastpath
from txbroker.conf import txsettings
from txbroker.exceptions import MessageNotFound
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.registry import registry

logger = logging.getLogger("txbroker")

State = Message.State
Event = TraceEvent.Event


def broker_db() -> str:
    return txsettings.DATABASE


def trace(msg_id: str, event: str, detail: str = "", *, group: str = "", actor: str = "") -> None:
    TraceEvent.objects.using(broker_db()).create(
        message_id=msg_id, event=event, detail=detail, consumer_group=group, actor=actor
    )


def trace_many(rows: Iterable[TraceEvent]) -> None:
    TraceEvent.objects.using(broker_db()).bulk_create(list(rows))


def _move(msg_id: str, from_state: str, to_state: str, **fields) -> bool:
    return (
        Message.objects.using(broker_db())
        .filter(msg_id=msg_id, state=from_state)
        .update(state=to_state, **fields)
        == 1
    )


def _refuse(msg_id: str, attempted: str, by: str, actor: str) -> None:
    current = (
        Message.objects.using(broker_db()).filter(msg_id=msg_id).values_list("state", flat=True)
    ).first()
    if current is None:
        raise MessageNotFound(msg_id)
    detail = f"{attempted} by {by} refused: the message is {current}"
    logger.warning("message %s: %s", msg_id, detail)
    trace(msg_id, Event.REFUSED, detail, actor=actor)


def wake_deliveries(*, coalesce: bool = True) -> None:
    """Enqueue the fast path after commit, unless a wake-up is already queued and not
    started (``coalesce``, see txbroker.wakeup). A failure only delays delivery: the sweep
    finds every due delivery in the database."""
    from txbroker import wakeup
    from txbroker.tasks import deliver

    try:
        if not coalesce or wakeup.should_publish():
            deliver.delay()
    except Exception:
        logger.warning("could not enqueue delivery task; the sweep will pick it up", exc_info=True)


def message_commit(
    message: Message,
    *,
    by: str,
    actor: str = "",
    detail: str = "",
    prelude: Iterable[TraceEvent] = (),
    check_times: int | None = None,
) -> bool:
    """HALF -> COMMITTED, creating one delivery per subscribed consumer group.

    ``prelude`` trace events (the local transaction's answer) are stored in the same
    transaction. Returns False, and records the refusal, when the message is not HALF.
    """
    db = broker_db()
    now = timezone.now()
    groups = [c.group for c in registry.subscribers(message.topic, message.tag)]
    deliveries = [
        Delivery(
            message_id=message.msg_id,
            consumer_group=group,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for group in groups
    ]
    suffix = f"; {detail}" if detail else ""
    prelude = list(prelude)
    events = [
        *prelude,
        TraceEvent(
            message_id=message.msg_id,
            event=Event.COMMITTED,
            actor=actor,
            detail=f"by {by}; deliveries to: {', '.join(groups) or 'no consumer group'}{suffix}",
        ),
    ]
    # PostgreSQL: the move, the deliveries and the trace rows in one statement (see
    # txbroker.fastpath). Elsewhere: the same writes in one transaction.
    moved = fastpath.message_commit(
        db, message.msg_id, now=now, check_times=check_times, deliveries=deliveries, events=events
    )
    if moved is None:
        with transaction.atomic(using=db):
            counted = {} if check_times is None else {"check_times": check_times}
            moved = _move(
                message.msg_id, State.HALF, State.COMMITTED, resolved_at=now, next_check_at=None, **counted
            )
            if moved:
                Delivery.objects.using(db).bulk_create(deliveries)
                trace_many(events)
    if not moved:
        with transaction.atomic(using=db):
            trace_many(prelude)
            _refuse(message.msg_id, "commit", by, actor)
        return False
    if groups:
        # After the commit (of the caller's transaction, when there is one).
        transaction.on_commit(wake_deliveries, using=db)
    return True


def message_rollback(
    message: Message,
    *,
    by: str,
    actor: str = "",
    detail: str = "",
    prelude: Iterable[TraceEvent] = (),
    check_times: int | None = None,
) -> bool:
    """HALF -> ROLLED_BACK: no consumer will ever see the message."""
    with transaction.atomic(using=broker_db()):
        counted = {} if check_times is None else {"check_times": check_times}
        if not _move(
            message.msg_id,
            State.HALF,
            State.ROLLED_BACK,
            resolved_at=timezone.now(),
            next_check_at=None,
            **counted,
        ):
            trace_many(prelude)
            _refuse(message.msg_id, "rollback", by, actor)
            return False
        suffix = f"; {detail}" if detail else ""
        trace_many(
            [
                *prelude,
                TraceEvent(
                    message_id=message.msg_id, event=Event.ROLLED_BACK, actor=actor, detail=f"by {by}{suffix}"
                ),
            ]
        )
    return True


def message_discard(message: Message, *, check_times: int, prelude: Iterable[TraceEvent] = ()) -> bool:
    """HALF -> DISCARDED once the checks are exhausted: parked, never delivered, resumable."""
    with transaction.atomic(using=broker_db()):
        trace_many(prelude)
        moved = _move(
            message.msg_id,
            State.HALF,
            State.DISCARDED,
            check_times=check_times,
            resolved_at=timezone.now(),
            next_check_at=None,
        )
        if moved:
            trace(
                message.msg_id,
                Event.DISCARDED,
                f"{check_times} checks answered UNKNOWN (TXBROKER_CHECK_MAX reached); "
                "parked until an operator resumes it",
            )
        else:
            _refuse(message.msg_id, "discard", "check-back", "")
    return moved


def message_postpone(
    message: Message, *, check_times: int, delay: float, prelude: Iterable[TraceEvent] = ()
) -> bool:
    """A HALF message stays HALF: record the check and when the next one is due."""
    with transaction.atomic(using=broker_db()):
        trace_many(prelude)
        return (
            Message.objects.using(broker_db())
            .filter(msg_id=message.msg_id, state=State.HALF)
            .update(check_times=check_times, next_check_at=timezone.now() + timedelta(seconds=delay))
            == 1
        )


def message_resume(msg_id: str, *, actor: str = "") -> bool:
    """DISCARDED -> HALF with a fresh check count, due for checking now."""
    with transaction.atomic(using=broker_db()):
        moved = _move(
            msg_id,
            State.DISCARDED,
            State.HALF,
            check_times=0,
            resolved_at=None,
            next_check_at=timezone.now(),
        )
        if moved:
            trace(msg_id, Event.RESUMED, "checking resumed; check count reset to 0", actor=actor)
        else:
            _refuse(msg_id, "resume", "operator", actor)
    return moved
