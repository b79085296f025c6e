"""Every state move of a Message, each one conditional UPDATE, in this one place.

Allowed: HALF -> COMMITTED | ROLLED_BACK | DISCARDED, DISCARDED -> HALF (an operator's
resume), and (none) -> COMMITTED: a plain message sent in the caller's transaction
(:func:`message_send_committed`, the outbox pattern). Anything else is refused, changes nothing, and is recorded in the trace.

Check-back holds HALF messages by a lease (``check_token``, until ``next_check_at``):
a check pass's answer moves a message only while its lease holds, and a pass that lost
its lease (it froze, or ran past it) records nothing. Every time is the database's clock
(txbroker.dbtime).

A commit creates the message's deliveries in its own transaction (or statement); their
moves from then on are txbroker.delivery_transitions'.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable
from typing import Optional

from django.db import transaction

from txbroker import dbtime, fastpath, tracing
from txbroker.db import broker_db
from txbroker.delivery_transitions import deliveries_create, deliveries_for
from txbroker.exceptions import MessageNotFound
from txbroker.models import Message, MessageKey, TraceEvent
from txbroker.ordering import take_sequence
from txbroker.trace import trace, trace_many
from txbroker.wakeup import wake_deliveries

logger = logging.getLogger("txbroker")

State = Message.State
Event = TraceEvent.Event


def _move(msg_id: str, from_state: str, to_state: str, *, held_by: Optional[str] = None, **fields) -> bool:
    """``held_by``: only while that check pass's lease holds the message."""
    rows = Message.objects.using(broker_db()).filter(msg_id=msg_id, state=from_state)
    if held_by is not None:
        rows = rows.filter(check_token=held_by)
    return rows.update(state=to_state, **fields) == 1


def _refuse(msg_id: str, attempted: str, by: str, actor: str) -> None:
    current = (
        Message.objects.using(broker_db()).filter(msg_id=msg_id).values_list("state", flat=True)
    ).first()
    if current is None:
        raise MessageNotFound(msg_id)
    detail = f"{attempted} by {by} refused: the message is {current}"
    logger.warning("message %s: %s", msg_id, detail)
    trace(msg_id, Event.REFUSED, detail, actor=actor)


@tracing.settles("commit")
def message_commit(
    message: Message,
    *,
    by: str,
    actor: str = "",
    detail: str = "",
    prelude: Iterable[TraceEvent] = (),
    check_times: Optional[int] = None,
    check_token: Optional[str] = None,
) -> bool:
    """HALF -> COMMITTED, creating one delivery per subscribed consumer group.

    ``prelude`` trace events (the local transaction's answer) are stored in the same
    transaction. Returns False, and records the refusal, when the message is not HALF;
    with ``check_token`` (a check pass's answer), False and nothing recorded when that
    pass no longer holds the message.
    """
    db = broker_db()
    deliveries = deliveries_for(message)
    groups = [d.consumer_group for d in deliveries]
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
    # An ordered message takes its commit sequence in the ORM path's transaction.
    moved = None
    if not message.message_group:
        moved = fastpath.message_commit(
            db,
            message.msg_id,
            check_times=check_times,
            check_token=check_token,
            deliveries=deliveries,
            events=events,
        )
    if moved is None:
        with transaction.atomic(using=db):
            moved = _move(
                message.msg_id, State.HALF, State.COMMITTED, held_by=check_token, **_settled(check_times)
            )
            if moved:
                if message.message_group:
                    events[-1].detail += sequence_deliveries(db, message.message_group, deliveries)
                deliveries_create(deliveries)
                trace_many(events)
    if not moved:
        if check_token is None:
            with transaction.atomic(using=db):
                trace_many(prelude)
                _refuse(message.msg_id, "commit", by, actor)
        return False
    if groups:
        # After the commit (of the caller's transaction, when there is one).
        transaction.on_commit(wake_deliveries, using=db)
    return True


def sequence_deliveries(db: str, message_group: str, deliveries: list) -> str:
    """Give an ordered message's deliveries its commit sequence (inside the committing
    transaction, see txbroker.ordering); returns the trace's note of it."""
    sequence = take_sequence(db, message_group)
    for delivery in deliveries:
        delivery.sequence = sequence
    return f"; message group {message_group}, sequence {sequence}"


def _settled(check_times: Optional[int]) -> dict:
    """The fields every move out of HALF writes."""
    fields = {"resolved_at": dbtime.now(), "next_check_at": None, "check_token": ""}
    if check_times is not None:
        fields["check_times"] = check_times
    return fields


def message_send_committed(
    message: Message, keys: list[MessageKey], *, producer_group: str, identity: str
) -> None:
    """Store a plain message COMMITTED, with its keys, deliveries and trace, inside the
    caller's ``transaction.atomic()`` on txbroker's database: it is visible exactly when the
    caller commits, and gone with a rollback. Workers are woken after that commit."""
    db = broker_db()
    deliveries = deliveries_for(message)
    groups = [d.consumer_group for d in deliveries]
    detail = (
        f"sent in the caller's transaction by producer group {producer_group} ({identity}); "
        f"deliveries to: {', '.join(groups) or 'no consumer group'}"
    )
    with transaction.atomic(using=db, savepoint=False):
        message.resolved_at = dbtime.now()
        message.save(using=db, force_insert=True)
        if message.message_group:
            detail += sequence_deliveries(db, message.message_group, deliveries)
        MessageKey.objects.using(db).bulk_create(keys)
        deliveries_create(deliveries)
        trace(message.msg_id, Event.COMMITTED, detail)
    if groups:
        transaction.on_commit(wake_deliveries, using=db)


@tracing.settles("rollback")
def message_rollback(
    message: Message,
    *,
    by: str,
    actor: str = "",
    detail: str = "",
    prelude: Iterable[TraceEvent] = (),
    check_times: Optional[int] = None,
    check_token: Optional[str] = None,
) -> bool:
    """HALF -> ROLLED_BACK: no consumer will ever see the message (``check_token`` as for
    :func:`message_commit`)."""
    with transaction.atomic(using=broker_db()):
        if not _move(
            message.msg_id, State.HALF, State.ROLLED_BACK, held_by=check_token, **_settled(check_times)
        ):
            if check_token is None:
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


def message_discard(
    message: Message,
    *,
    check_times: int,
    prelude: Iterable[TraceEvent] = (),
    check_token: Optional[str] = None,
) -> bool:
    """HALF -> DISCARDED once the checks are exhausted: parked, never delivered, resumable."""
    with transaction.atomic(using=broker_db()):
        moved = _move(
            message.msg_id, State.HALF, State.DISCARDED, held_by=check_token, **_settled(check_times)
        )
        if moved:
            trace_many(prelude)
            trace(
                message.msg_id,
                Event.DISCARDED,
                f"{check_times} checks answered UNKNOWN (TXBROKER_CHECK_MAX reached); "
                "parked until an operator resumes it",
            )
        elif check_token is None:
            trace_many(prelude)
            _refuse(message.msg_id, "discard", "check-back", "")
    return moved


def message_postpone(
    message: Message,
    *,
    check_times: int,
    delay: float,
    prelude: Iterable[TraceEvent] = (),
    check_token: Optional[str] = None,
) -> bool:
    """A HALF message stays HALF: record the check and when the next one is due (``delay``
    seconds from now, database time)."""
    with transaction.atomic(using=broker_db()):
        rows = Message.objects.using(broker_db()).filter(msg_id=message.msg_id, state=State.HALF)
        if check_token is not None:
            rows = rows.filter(check_token=check_token)
        moved = rows.update(check_times=check_times, next_check_at=dbtime.after(delay), check_token="") == 1
        if moved:
            trace_many(prelude)
        return moved


def messages_claim_for_check(
    *,
    limit: int,
    lease: float,
    producer_groups: Optional[Collection[str]] = None,
    exclude_groups: Collection[str] = (),
) -> tuple[str, list[Message]]:
    """Lease up to ``limit`` HALF messages due for a check (oldest first) to one check pass
    for ``lease`` seconds: ``FOR UPDATE SKIP LOCKED`` so concurrent passes never take the
    same message, and the lock is held only for this statement's transaction. A pass that
    dies or freezes holding the lease only delays those messages until it ends (then they
    are due again, uncounted). ``producer_groups``: only theirs; ``exclude_groups``: not
    theirs (remote producer groups, checked by the gRPC server holding their streams)."""
    db = broker_db()
    token = uuid.uuid4().hex
    due = Message.objects.using(db).due_for_check()
    if producer_groups is not None:
        due = due.filter(producer_group__in=list(producer_groups))
    if exclude_groups:
        due = due.exclude(producer_group__in=list(exclude_groups))
    with transaction.atomic(using=db):
        picked = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_check_at")
            .values_list("pk", flat=True)[:limit]
        )
        if not picked:
            return token, []
        Message.objects.using(db).filter(pk__in=picked, state=State.HALF).update(
            check_token=token, next_check_at=dbtime.after(lease)
        )
    claimed = Message.objects.using(db).filter(pk__in=picked, check_token=token, state=State.HALF)
    return token, list(claimed.order_by("created_at", "msg_id"))


def messages_release_check(msg_ids: list[str], token: str) -> int:
    """Give back leased messages a pass did not check (its budget ran out): due now."""
    if not msg_ids:
        return 0
    return (
        Message.objects.using(broker_db())
        .filter(pk__in=msg_ids, state=State.HALF, check_token=token)
        .update(check_token="", next_check_at=dbtime.now())
    )


def message_check_skipped(message: Message, *, token: str, delay: float, detail: str) -> bool:
    """No checker could be asked: not a check (the count stays), due again after ``delay``."""
    with transaction.atomic(using=broker_db()):
        moved = (
            Message.objects.using(broker_db())
            .filter(msg_id=message.msg_id, state=State.HALF, check_token=token)
            .update(check_token="", next_check_at=dbtime.after(delay))
            == 1
        )
        if moved:
            trace(message.msg_id, Event.CHECK_SKIPPED, detail)
    return moved


def message_resume(msg_id: str, *, actor: str = "") -> bool:
    """DISCARDED -> HALF with a fresh check count, due for checking now."""
    with transaction.atomic(using=broker_db()):
        moved = _move(
            msg_id,
            State.DISCARDED,
            State.HALF,
            check_times=0,
            resolved_at=None,
            next_check_at=dbtime.now(),
            check_token="",
        )
        if moved:
            trace(msg_id, Event.RESUMED, "checking resumed; check count reset to 0", actor=actor)
        else:
            _refuse(msg_id, "resume", "operator", actor)
    return moved
