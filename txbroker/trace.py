"""Writing a message's trace: its rows, and the tracebacks they (and ``last_error``) quote."""

from __future__ import annotations

import traceback
from collections.abc import Iterable

from txbroker.db import broker_db
from txbroker.models import TraceEvent

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
