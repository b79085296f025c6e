"""Every state move of a Delivery, each one conditional UPDATE (or a ``FOR UPDATE SKIP
LOCKED`` claim), in this one place:

    (message committed) --create--> PENDING, due now (or at its deliver_at): one per
        subscribed consumer group, with the message's group and commit sequence
    PENDING | RETRY --claim--> RUNNING --start (attempt counted)--> handler
        (ordered: only the first unfinished of its message group, see txbroker.ordering)
        handler --success--> SUCCEEDED
                --failure--> RETRY (after a delay) | DEAD
    RUNNING, claim expired: never started --> RETRY, due now (attempts unchanged)
                            started, its worker died or froze --> RETRY (after a delay) | DEAD
    RUNNING, released (worker stopping), never started --> RETRY, due now
    operators' moves, in txbroker.operator_transitions:
    DEAD | RETRY (| SUCCEEDED with force) --replay--> PENDING, due now (an ordered one
        keeps its sequence: it runs before the rest of its message group again)
    PENDING, never attempted, of a delayed message --recall--> RECALLED (never delivered)
    DEAD --skip--> SKIPPED (its message group goes on)

A move out of RUNNING happens only while the claim is the mover's (its ``claim_token``):
a worker that lost its claim records nothing about that delivery (no trace row, no
metric). Who runs the handlers between these moves is txbroker.delivery. Every time is
the database's clock (txbroker.dbtime).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Optional

from django.db import transaction
from django.db.models import F

from txbroker import dbtime, fastpath
from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.metrics import observe_worker_lost
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.operator_transitions import replay, replay_many  # noqa: F401 (their home was here)
from txbroker.ordering import claimable
from txbroker.registry import Consumer, registry
from txbroker.remote_groups import remote_deliveries_for
from txbroker.trace import trace_many, trimmed_traceback

logger = logging.getLogger("txbroker.delivery")


class WorkerLost(Exception):
    """What a delivery whose worker died mid-handler is logged with: the worker left no
    exception of its own, and a log record with one carries the failure to error trackers."""


def log_fields(msg_id: str, topic: str, group: str, attempt: int) -> dict:
    """A delivery's log record fields (``extra=``): a JSON log has each as a field of its own."""
    return {"msg_id": msg_id, "topic": topic, "consumer_group": group, "attempt": attempt}


Status = Delivery.Status
Event = TraceEvent.Event

WORKER_LOST = "worker died during the handler"
VOID_BATCH = "claim expired in a batch that never committed (its worker died or froze)"


class ClaimLost(Exception):
    """The claim was taken back before this worker could commit: roll everything back."""


def retry_delay(failed_attempts: int) -> float:
    """Seconds before the next attempt once ``failed_attempts`` attempts failed."""
    delays = txsettings.RETRY_DELAYS
    return delays[min(failed_attempts, len(delays)) - 1]


def max_reconsume_times(consumer: Optional[Consumer]) -> int:
    if consumer is not None and consumer.max_reconsume_times is not None:
        return consumer.max_reconsume_times
    return txsettings.MAX_RECONSUME_TIMES


def _failure(
    msg_id: str, group: str, attempts: int, consumer: Optional[Consumer], event: str, what: str, error: str
) -> tuple[str, Optional[float], list[TraceEvent]]:
    """Attempt ``attempts`` failed: RETRY after its delay, or DEAD past
    ``max_reconsume_times``. Returns the status, the delay (None: DEAD) and the trace rows
    (``event`` saying ``what`` happened, and DEAD's row with the last ``error``)."""
    limit = max_reconsume_times(consumer)
    dead = attempts > limit
    delay = None if dead else retry_delay(attempts)
    detail = what + ("" if dead else f"; retry in {delay:g} s")
    events = [TraceEvent(message_id=msg_id, event=event, consumer_group=group, detail=detail)]
    if dead:
        tried = f"{attempts} attempt{'' if attempts == 1 else 's'}"
        detail = f"{tried} failed (max reconsume times {limit}); last error: {error}"
        events.append(TraceEvent(message_id=msg_id, event=Event.DEAD, consumer_group=group, detail=detail))
    return (Status.DEAD if dead else Status.RETRY), delay, events


# --- creation -----------------------------------------------------------------------------
def deliveries_for(message: Message, *, sequence: Optional[int] = None) -> list[Delivery]:
    """The deliveries a commit of ``message`` creates: one per consumer group subscribed to
    its topic and tag (Django's and remote ones), PENDING and due now by the database's clock (the columns'
    defaults), or at the message's ``deliver_at``; an ordered message's carry its group
    and commit ``sequence``. Not saved: the commit inserts them with its move (see
    txbroker.transitions), by :func:`deliveries_create` or in its own statement."""
    groups = [c.group for c in registry.subscribers(message.topic, message.tag)]
    extra: dict = {}
    if message.deliver_at is not None:
        extra["next_attempt_at"] = message.deliver_at
    if message.message_group:
        extra.update(message_group=message.message_group, sequence=sequence)
    local = [Delivery(message_id=message.msg_id, consumer_group=group, **extra) for group in groups]
    # Consumer groups subscribed over gRPC: from a per-process cache, no query per commit.
    return local + remote_deliveries_for(message, taken=set(groups), extra=extra)


def deliveries_create(deliveries: list[Delivery]) -> None:
    """INSERT ``deliveries`` (inside the commit's transaction)."""
    Delivery.objects.using(broker_db()).bulk_create(deliveries)


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
    ids = None if ids is None else list(ids)
    blocking = registry.groups_blocking_on_dead()
    picked = fastpath.claim_due(
        db, token=token, claim_timeout=timeout, limit=limit, ids=ids, alone=alone, blocking_groups=blocking
    )
    if picked is None:
        with transaction.atomic(using=db):
            due = Delivery.objects.using(db).due().filter(run_alone=alone).filter(claimable(blocking))
            if ids is not None:
                due = due.filter(pk__in=ids)
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


def start_attempt(delivery: Delivery, token: str) -> int:
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


# --- the end of an attempt ----------------------------------------------------------------
def mark_succeeded(delivery: Delivery, token: str, elapsed_ms: float):
    """RUNNING -> SUCCEEDED, the handler's time on the row (the trace shows the attempt
    from it: txbroker.trace.with_successes); returns when (database time). Raises
    ClaimLost (rolling the handler back) if the claim is gone, which the row lock taken
    in this transaction rules out."""
    db = broker_db()
    done = fastpath.delivery_succeed(db, delivery.pk, token, duration_ms=elapsed_ms)
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
                duration_ms=elapsed_ms,
            )
        )
        succeeded_at = None
        if moved:
            succeeded_at = (
                Delivery.objects.using(db).values_list("succeeded_at", flat=True).get(pk=delivery.pk)
            )
    if not moved:
        raise ClaimLost
    return succeeded_at


def mark_failed(
    delivery: Delivery, token: str, consumer: Optional[Consumer], error: BaseException, elapsed_ms: float
) -> Optional[str]:
    """RUNNING -> RETRY (after its delay, database time) | DEAD, with its trace rows, in
    its own transaction (the handler's one has rolled back). Only while the claim is
    still ours: returns None, having written nothing, when it was taken back."""
    db = broker_db()
    text = trimmed_traceback(error)
    summary = f"{type(error).__name__}: {error}"[:500]
    what = f"attempt {delivery.attempts}: FAILED in {elapsed_ms:.1f} ms: {summary}"
    msg_id, group, attempts = delivery.message_id, delivery.consumer_group, delivery.attempts
    status, delay, events = _failure(msg_id, group, attempts, consumer, Event.DELIVERY_ATTEMPT, what, summary)
    events[0].outcome = TraceEvent.Outcome.FAILED
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
    topic = delivery.message.topic if Delivery.message.is_cached(delivery) else ""
    fields = log_fields(msg_id, topic, group, attempts)
    if status == Status.DEAD:
        text = "delivery %s of message %s to %s is DEAD: %s"
        logger.error(text, delivery.pk, msg_id, group, summary, exc_info=error, extra=fields)
    else:
        text = "delivery %s of message %s to %s: attempt %s failed, retry in %gs: %s"
        logger.warning(
            text, delivery.pk, msg_id, group, attempts, delay, summary, exc_info=error, extra=fields
        )
    return status


# --- giving claims back -------------------------------------------------------------------
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
        detail = "released before its handler started; due again now"
        _due_again(released, {"claim_token": token}, Event.RELEASED, detail)
    return len(released)


def _due_again(rows: list[tuple], condition: dict, event: str, detail: str, **also) -> None:
    """RUNNING, never started -> RETRY, due now (attempts unchanged), each with its trace
    row. ``rows``: (pk, message id, consumer group, ...) of rows this transaction locked."""
    Delivery.objects.using(broker_db()).filter(pk__in=[row[0] for row in rows], **condition).update(
        status=Status.RETRY,
        claim_token="",
        claimed_until=None,
        next_attempt_at=dbtime.now(),
        updated_at=dbtime.now(),
        **also,
    )
    trace_many(
        TraceEvent(message_id=msg_id, event=event, consumer_group=group, detail=detail)
        for _, msg_id, group, *_rest in rows
    )


def reclaim_expired() -> int:
    """Take back claims that ran out (database time): their worker died, froze, or is far
    behind. A delivery whose handler runs holds its row lock, so SKIP LOCKED leaves it
    alone; a frozen worker's lock is gone once PostgreSQL ended its session
    (idle_in_transaction_session_timeout).

    Never started: due again now, attempt count unchanged. Started (the handler was
    running when its worker died): a failed attempt, with its retry delay, DEAD after
    ``max_reconsume_times``. Started together with others of its claim (a batch run in one
    transaction, see txbroker.batch): which handler killed the worker is unknown, and none
    of the batch's effects committed, so each goes back due now with its start undone, to
    run alone from now on (where a death counts).
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
            detail = "claim expired before the handler started; due again now (attempts unchanged)"
            _due_again(unstarted, {"status": Status.RUNNING}, Event.RECLAIMED, detail)
        started = [row for row in expired if row[4] is not None]
        together = Counter(row[5] for row in started)
        if batched := [row for row in started if together[row[5]] > 1]:
            detail = VOID_BATCH + "; due again now, to run alone (attempts unchanged)"
            also = {"attempts": F("attempts") - 1, "started_at": None, "run_alone": True}
            _due_again(batched, {"status": Status.RUNNING}, Event.RECLAIMED, detail, **also)
            logger.warning("%s deliveries taken back: %s", len(batched), VOID_BATCH)
        started = [row for row in started if together[row[5]] == 1]
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
    error = f"{WORKER_LOST} (attempt {attempts}: the worker died or froze; its claim expired)"
    what = f"attempt {attempts}: FAILED: {WORKER_LOST}"
    status, delay, events = _failure(msg_id, group, attempts, consumer, Event.RECLAIMED, what, WORKER_LOST)
    due = {} if delay is None else {"next_attempt_at": dbtime.after(delay)}
    # run_alone: it may kill its worker again, and no batch-mate should go with it.
    Delivery.objects.using(broker_db()).filter(pk=pk, claim_token=token, status=Status.RUNNING).update(
        status=status,
        claim_token="",
        claimed_until=None,
        last_error=error,
        updated_at=dbtime.now(),
        run_alone=True,
        **due,
    )
    fields = log_fields(msg_id, topic, group, attempts)
    dead = status == Status.DEAD
    log, template = (logger.error, "%s is DEAD: %s") if dead else (logger.warning, "%s: %s; retried")
    where = f"delivery {pk} of message {msg_id} to {group}"
    log(template, where, error, exc_info=WorkerLost(error), extra=fields)
    trace_many(events)
    observe_worker_lost(group, status)
