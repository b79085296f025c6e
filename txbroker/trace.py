"""Writing a message's trace: its rows, and the tracebacks they (and ``last_error``) quote;
reading it, with the line of each delivery's successful attempt, which is kept on the
delivery row (``succeeded_at``, ``attempts``, ``duration_ms``) instead of a trace row: the
success path writes nothing but its move. Failures, retries, replays, reclaims keep their
rows; a forced replay of a SUCCEEDED delivery writes its success line as a row first."""

from __future__ import annotations

import traceback
from collections.abc import Iterable

from txbroker.db import broker_db
from txbroker.models import Delivery, TraceEvent

TRACEBACK_LIMIT = 4000


def trace(msg_id: str, event: str, detail: str = "", *, group: str = "", actor: str = "") -> None:
    TraceEvent.objects.using(broker_db()).create(
        message_id=msg_id, event=event, detail=detail, consumer_group=group, actor=actor
    )


def trace_many(rows: Iterable[TraceEvent]) -> None:
    TraceEvent.objects.using(broker_db()).bulk_create(list(rows))


def trimmed_traceback(exc: BaseException) -> str:
    """``exc``'s traceback, its end only when longer than TRACEBACK_LIMIT characters."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= TRACEBACK_LIMIT else "...\n" + text[-TRACEBACK_LIMIT:]


def success_event(msg_id: str, group: str, attempts: int, duration_ms: float, at) -> TraceEvent:
    """The trace line of a delivery's successful attempt (not saved)."""
    return TraceEvent(
        message_id=msg_id,
        at=at,
        event=TraceEvent.Event.DELIVERY_ATTEMPT,
        consumer_group=group,
        detail=f"attempt {attempts}: SUCCEEDED in {duration_ms:.1f} ms",
        outcome=TraceEvent.Outcome.SUCCEEDED,
    )


def with_successes(msg_id: str) -> list[TraceEvent]:
    """The message's trace in order: its rows, and each SUCCEEDED delivery's success line
    (unsaved, id None) placed by its time among them."""
    db = broker_db()
    rows = list(TraceEvent.objects.using(db).filter(message_id=msg_id).order_by("id"))
    done = (
        Delivery.objects.using(db)
        .filter(message_id=msg_id, status=Delivery.Status.SUCCEEDED, duration_ms__isnull=False)
        .order_by("succeeded_at", "consumer_group")
        .values_list("consumer_group", "attempts", "duration_ms", "succeeded_at")
    )
    for group, attempts, duration_ms, at in done:
        after = next((i for i, row in enumerate(rows) if row.at > at), len(rows))
        rows.insert(after, success_event(msg_id, group, attempts, duration_ms, at))
    return rows
