"""Operator actions, shared by the admin, the REST API and the commands. Each records who
did it in the message's trace."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from txbroker import dbtime, delivery_transitions, operator_transitions
from txbroker.db import broker_db
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.ids import could_be_msg_id
from txbroker.models import Delivery, Message, MessageKey, TraceEvent
from txbroker.trace import with_successes
from txbroker.transitions import message_commit, message_resume, message_rollback

# Rows per transaction in bulk actions.
BATCH_SIZE = 500


def get_message(msg_id: str) -> Message:
    if could_be_msg_id(msg_id):
        try:
            return Message.objects.using(broker_db()).get(pk=msg_id)
        except Message.DoesNotExist:
            pass
    raise MessageNotFound(f"no message with id {msg_id!r}")


def replay(msg_id: str, *, group: Optional[str] = None, force: bool = False, actor: str = "") -> int:
    """Re-deliver a committed message to one consumer group or all: DEAD and RETRY
    deliveries become due now, SUCCEEDED ones only with ``force``. Returns the count."""
    message = get_message(msg_id)
    if message.state != Message.State.COMMITTED:
        raise InvalidTransition(f"message {msg_id} is {message.state}; only COMMITTED messages are delivered")
    if group is not None and not message.deliveries.filter(consumer_group=group).exists():
        raise InvalidTransition(f"message {msg_id} has no delivery to consumer group {group!r}")
    return delivery_transitions.replay(msg_id, group=group, force=force, actor=actor)


def resume(msg_id: str, *, actor: str = "") -> None:
    """Resume checking a DISCARDED message (its check count starts again at 0)."""
    get_message(msg_id)
    if not message_resume(msg_id, actor=actor):
        raise InvalidTransition(f"message {msg_id} is not DISCARDED; only DISCARDED messages resume")


def resolve(msg_id: str, *, commit: bool, actor: str = "") -> None:
    """Commit or roll back a HALF message by hand."""
    message = get_message(msg_id)
    settle = message_commit if commit else message_rollback
    if not settle(message, by="operator", actor=actor):
        raise InvalidTransition(f"message {msg_id} is not HALF; only HALF messages can be settled by hand")


@dataclass
class RecallResult:
    """What a recall did: the consumer groups recalled, and those it could not recall
    (their delivery already ran or runs) with their status."""

    recalled: list[str]
    not_recalled: dict[str, str]


def recall(msg_id: str, *, actor: str = "") -> RecallResult:
    """Recall a delayed message (RocketMQ 5's RecallMessage): its deliveries that have not
    started are never delivered (RECALLED), and the trace records ``actor``. Raises
    InvalidTransition for a message that is not delayed or not COMMITTED yet (a HALF one is
    rolled back instead). Check ``not_recalled``: those groups got, or get, the message."""
    message = get_message(msg_id)
    if message.deliver_at is None:
        raise InvalidTransition(
            f"message {msg_id} is not a delayed message; only delayed messages are recalled"
        )
    if message.state != Message.State.COMMITTED:
        raise InvalidTransition(f"message {msg_id} is {message.state}; only COMMITTED messages are recalled")
    recalled, refused = operator_transitions.recall(msg_id, actor=actor)
    return RecallResult(recalled=recalled, not_recalled=refused)


def skip(msg_id: str, *, group: str, actor: str = "") -> None:
    """Skip the DEAD delivery of ``msg_id`` to consumer group ``group``: the rest of its
    message group goes on (for consumers with ``on_dead_in_group="block"``)."""
    get_message(msg_id)
    delivery_id = (
        Delivery.objects.using(broker_db())
        .filter(message_id=msg_id, consumer_group=group)
        .values_list("pk", flat=True)
        .first()
    )
    if delivery_id is None:
        raise InvalidTransition(f"message {msg_id} has no delivery to consumer group {group!r}")
    skip_delivery(delivery_id, actor=actor)


def skip_delivery(delivery_id: int, *, actor: str = "") -> None:
    """Skip one DEAD delivery (DEAD -> SKIPPED), recorded with ``actor``."""
    if not operator_transitions.skip(delivery_id, actor=actor):
        raise InvalidTransition(f"delivery {delivery_id} is not DEAD; only DEAD deliveries are skipped")


def message_trace(msg_id: str) -> list[TraceEvent]:
    """The message's trace, in order (each delivery's success line from its row)."""
    get_message(msg_id)
    return with_successes(msg_id)


# --- bulk actions ---------------------------------------------------------------------------
Progress = Callable[[int, Optional[int]], None]  # (done so far, total if known)


def replay_deliveries(delivery_ids: Iterable[int], *, actor: str = "") -> int:
    """Replay the given DEAD deliveries (the dead-letter queue's bulk action); deliveries no
    longer DEAD are left alone. Returns how many were replayed."""
    ids = list(delivery_ids)
    replayed = 0
    for start in range(0, len(ids), BATCH_SIZE):
        replayed += delivery_transitions.replay_many(ids[start : start + BATCH_SIZE], actor=actor)
    return replayed


def dead_letter_ids(*, group: Optional[str] = None, since: Optional[datetime] = None) -> QuerySet:
    """Ids of DEAD deliveries, optionally of one consumer group and dead since ``since``."""
    qs = Delivery.objects.using(broker_db()).dead()
    if group:
        qs = qs.filter(consumer_group=group)
    if since:
        qs = qs.filter(updated_at__gte=since)
    return qs.order_by("pk").values_list("pk", flat=True)


def replay_dead(
    *,
    group: Optional[str] = None,
    since: Optional[datetime] = None,
    actor: str = "",
    dry_run: bool = False,
    progress: Optional[Progress] = None,
) -> int:
    """Replay every dead letter (of ``group``, dead since ``since``), in batches; with
    ``dry_run`` only count them. Returns the count.

    Works through a snapshot of ids (ascending, up to the highest at the start), so a
    delivery that dies again while this runs is not replayed twice.
    """
    ids = dead_letter_ids(group=group, since=since)
    if dry_run:
        return ids.count()
    total = ids.count()
    ceiling = ids.last()
    done = 0
    last = 0
    while ceiling is not None:
        batch = list(ids.filter(pk__gt=last, pk__lte=ceiling)[:BATCH_SIZE])
        if not batch:
            break
        last = batch[-1]
        done += delivery_transitions.replay_many(batch, actor=actor)
        if progress is not None:
            progress(done, total)
    return done


def discarded_ids() -> QuerySet:
    return (
        Message.objects.using(broker_db())
        .filter(state=Message.State.DISCARDED)
        .order_by("-created_at", "-msg_id")
        .values_list("msg_id", flat=True)
    )


def resume_all(*, actor: str = "", dry_run: bool = False, progress: Optional[Progress] = None) -> int:
    """Resume checking of every DISCARDED message. Returns how many were resumed."""
    ids = discarded_ids()
    total = ids.count()
    if dry_run:
        return total
    done = 0
    # Each resumed message leaves DISCARDED, so re-reading the first batch moves on.
    while True:
        batch = list(ids[:BATCH_SIZE])
        if not batch:
            break
        moved = sum(message_resume(msg_id, actor=actor) for msg_id in batch)
        done += moved
        if progress is not None:
            progress(done, total)
        if not moved:
            break
    return done


@dataclass
class PurgeReport:
    messages: int = 0
    deliveries: int = 0
    trace_events: int = 0
    keys: int = 0


def purgeable(*, cutoff: datetime) -> QuerySet:
    """Finished messages settled before ``cutoff``: ROLLED_BACK, or COMMITTED with every
    delivery SUCCEEDED before ``cutoff``. Never HALF or DISCARDED, never a message with an
    undone (PENDING, RUNNING, RETRY) or DEAD delivery. RECALLED and SKIPPED ones are done."""
    db = broker_db()
    done = [Delivery.Status.SUCCEEDED, Delivery.Status.RECALLED, Delivery.Status.SKIPPED]
    unfinished = (
        Delivery.objects.using(db)
        .filter(message=OuterRef("pk"))
        .filter(~Q(status__in=done) | Q(succeeded_at__gte=cutoff))
    )
    return (
        Message.objects.using(db)
        .filter(state__in=[Message.State.COMMITTED, Message.State.ROLLED_BACK])
        .filter(created_at__lt=cutoff, resolved_at__lt=cutoff)
        .filter(~Exists(unfinished))
    )


def purge(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = 1000,
    progress: Optional[Progress] = None,
    now: Optional[datetime] = None,
) -> PurgeReport:
    """Delete finished messages (see :func:`purgeable`) older than ``older_than``, with their
    deliveries, keys and trace, one batch per transaction. ``dry_run`` only counts."""
    db = broker_db()
    cutoff = (now or dbtime.read(db)) - older_than
    report = PurgeReport()
    candidates = purgeable(cutoff=cutoff)
    if dry_run:
        report.messages = candidates.count()
        ids = candidates.values("pk")
        report.deliveries = Delivery.objects.using(db).filter(message__in=ids).count()
        report.trace_events = TraceEvent.objects.using(db).filter(message__in=ids).count()
        report.keys = MessageKey.objects.using(db).filter(message__in=ids).count()
        return report
    total = candidates.count()
    while True:
        with transaction.atomic(using=db):
            # Lock the batch and its deliveries, then check again: a replay that got there
            # first has made the message unfinished, and it is left alone.
            batch = list(
                candidates.select_for_update(skip_locked=True)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not batch:
                break
            list(
                Delivery.objects.using(db).filter(message_id__in=batch).select_for_update().values_list("pk")
            )
            batch = list(candidates.filter(pk__in=batch).values_list("pk", flat=True))
            # Plain DELETEs, children first: no rows are loaded into Python.
            report.deliveries += Delivery.objects.using(db).filter(message_id__in=batch)._raw_delete(db)
            report.trace_events += TraceEvent.objects.using(db).filter(message_id__in=batch)._raw_delete(db)
            report.keys += MessageKey.objects.using(db).filter(message_id__in=batch)._raw_delete(db)
            report.messages += Message.objects.using(db).filter(pk__in=batch)._raw_delete(db)
        if progress is not None:
            progress(report.messages, total)
    return report
