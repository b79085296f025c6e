"""The Delivery moves operators make, each one conditional UPDATE (listed with every other
Delivery move at the top of txbroker.delivery_transitions):

    DEAD | RETRY (| SUCCEEDED with force) --replay--> PENDING, due now
    PENDING, never attempted (a delayed message's) --recall--> RECALLED: never delivered
    DEAD --skip--> SKIPPED: its message group goes on (``on_dead_in_group="block"``)

An ordered delivery keeps its sequence through a replay: it runs again before the rest of
its message group (txbroker.ordering). Each move records the operator in the trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from django.db import transaction

from txbroker import dbtime
from txbroker.db import broker_db
from txbroker.models import Delivery, TraceEvent
from txbroker.trace import success_event, trace_many
from txbroker.wakeup import wake_deliveries

Status = Delivery.Status
Event = TraceEvent.Event


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
            .values_list(
                "pk", "message_id", "consumer_group", "status", "attempts", "duration_ms", "succeeded_at"
            )
        )
        if not picked:
            return 0
        # A SUCCEEDED one's success line lives on its row (txbroker.trace): keep it as a row.
        trace_many(
            success_event(msg_id, grp, attempts, duration_ms, at)
            for _, msg_id, grp, status, attempts, duration_ms, at in picked
            if status == Status.SUCCEEDED and duration_ms is not None
        )
        Delivery.objects.using(db).filter(pk__in=[p[0] for p in picked], status__in=statuses).update(
            status=Status.PENDING,
            next_attempt_at=dbtime.now(),
            updated_at=dbtime.now(),
            claim_token="",
            claimed_until=None,
            started_at=None,
            duration_ms=None,
        )
        trace_many(
            TraceEvent(
                message_id=msg_id,
                event=Event.REPLAY,
                consumer_group=grp,
                actor=actor,
                detail=f"{status} -> PENDING{' (forced)' if status == Status.SUCCEEDED else ''}",
            )
            for _, msg_id, grp, status, *_rest in picked
        )
        transaction.on_commit(wake_deliveries, using=db)
    return len(picked)


# --- recall and skip ----------------------------------------------------------------------
def recall(msg_id: str, *, actor: str = "") -> tuple[list[str], dict[str, str]]:
    """PENDING deliveries of the message that never started an attempt -> RECALLED (never
    delivered), with one RECALLED trace row naming ``actor``. Returns the consumer groups
    recalled, and those it could not recall with their status."""
    db = broker_db()
    with transaction.atomic(using=db):
        rows = list(
            Delivery.objects.using(db)
            .filter(message_id=msg_id)
            .select_for_update()
            .order_by("consumer_group")
            .values_list("pk", "consumer_group", "status", "attempts")
        )
        recallable = [pk for pk, _, status, attempts in rows if status == Status.PENDING and not attempts]
        moved = Delivery.objects.using(db).filter(pk__in=recallable, status=Status.PENDING, attempts=0)
        moved.update(status=Status.RECALLED, updated_at=dbtime.now())
        recalled = [group for pk, group, _, _ in rows if pk in recallable]
        refused = {group: status for pk, group, status, _ in rows if pk not in recallable}
        detail = f"recalled: {', '.join(recalled) or 'no delivery'}"
        if refused:
            detail += "; could not recall (already delivered or running): " + ", ".join(
                f"{group} ({status})" for group, status in refused.items()
            )
        trace_many([TraceEvent(message_id=msg_id, event=Event.RECALLED, actor=actor, detail=detail)])
    return recalled, refused


def skip(delivery_id: int, *, actor: str = "") -> bool:
    """DEAD -> SKIPPED: its message group goes on without it (the dead letter stays visible
    in the trace). False, and nothing changed, when it is not DEAD."""
    db = broker_db()
    with transaction.atomic(using=db):
        row = (
            Delivery.objects.using(db)
            .filter(pk=delivery_id, status=Status.DEAD)
            .select_for_update()
            .values_list("message_id", "consumer_group", "message_group", "sequence")
            .first()
        )
        if row is None:
            return False
        msg_id, group, message_group, sequence = row
        Delivery.objects.using(db).filter(pk=delivery_id, status=Status.DEAD).update(
            status=Status.SKIPPED, updated_at=dbtime.now()
        )
        where = f" of message group {message_group!r} (sequence {sequence})" if message_group else ""
        detail = f"DEAD -> SKIPPED{where}: the rest of its group goes on"
        trace_many(
            [
                TraceEvent(
                    message_id=msg_id, event=Event.SKIPPED, consumer_group=group, actor=actor, detail=detail
                )
            ]
        )
        transaction.on_commit(wake_deliveries, using=db)
    return True
