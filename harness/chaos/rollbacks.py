"""``check_back_rollbacks``: payment messages rolled back by check-back (a ROLLED_BACK trace row
whose detail starts "by check-back") whose producer process (the pid in the HALF_STORED
row's detail) was alive and running from the half message's storing to the rollback: not
killed in that span (by the harness, its whole process group, a fault point, gunicorn's
worker timeout, Celery's hard time limit or any exit the logs show) and not frozen in it.
Check-back gave up on a payment its producer was still working on.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from harness.chaos.history import ProcessHistory

# "producer group payment_producer_group (host:pid); first check after 2s"
PRODUCER_IDENTITY = re.compile(r"\((?P<host>[^()]*):(?P<pid>\d+)\)")
CHECK_BACK_ROLLBACK = "by check-back"
SESSION_LOST = ("OperationalError", "InterfaceError")


def check_back_rollbacks(
    history: ProcessHistory, timeline: list[tuple[float, str]], crashes: list[tuple[float, float | None]]
) -> tuple[dict[str, Any], list[str]]:
    """Payment messages rolled back by check-back, by what had happened to their producer
    (see the module's docstring); returns the counts and examples of the false ones with
    their cause."""
    from payments.events import TOPIC
    from txbroker.models import Message, TraceEvent

    Event = TraceEvent.Event
    rollbacks = dict(
        TraceEvent.objects.filter(
            event=Event.ROLLED_BACK, detail__startswith=CHECK_BACK_ROLLBACK, message__topic=TOPIC
        ).values_list("message_id", "at")
    )
    trace: dict[str, list[tuple[Any, str, str]]] = defaultdict(list)
    for msg_id, at, event, detail in (
        TraceEvent.objects.filter(message_id__in=list(rollbacks))
        .order_by("message_id", "id")
        .values_list("message_id", "at", "event", "detail")
    ):
        trace[msg_id].append((at, event, detail))
    keys = dict(Message.objects.filter(pk__in=list(rollbacks)).values_list("msg_id", "keys"))
    counts: Counter = Counter(total=len(rollbacks), producer_killed=0, producer_frozen=0, false=0)
    causes: Counter = Counter()
    examples: list[str] = []
    explained: list[str] = []
    for msg_id, rolled_at in sorted(rollbacks.items(), key=lambda item: item[1]):
        stored = next(((at, d) for at, e, d in trace[msg_id] if e == Event.HALF_STORED), None)
        producer = PRODUCER_IDENTITY.search(stored[1]) if stored else None
        if stored is None or producer is None:
            counts["producer_unknown"] += 1
            continue
        start, end = stored[0].timestamp(), rolled_at.timestamp()
        pid = int(producer.group("pid"))
        reasons = history.why_not_alive(pid, start, end)
        if reasons:
            counts[
                "producer_killed" if any(r.startswith("killed") for r in reasons) else "producer_frozen"
            ] += 1
            if len(explained) < 50:
                explained.append(f"{msg_id} (producer pid {pid}, {end - start:.1f}s): {'; '.join(reasons)}")
            continue
        counts["false"] += 1
        faults = [
            f"{kind} at +{t - start:.1f}s"
            for t, kind in timeline
            if start - 1 <= t <= end
            and kind not in ("sigkill_celery_pool_process", "sigkill_gunicorn_worker")
        ]
        faults += [
            f"PostgreSQL down from +{at - start:.1f}s to +{(up or end) - start:.1f}s"
            for at, up in crashes
            if at <= end and (up is None or up >= start)
        ]
        kind, cause = _rollback_cause(trace[msg_id], rolled_at, faults)
        causes[kind] += 1
        if len(examples) < 10:
            key = (keys.get(msg_id) or [""])[0]
            examples.append(
                f"{msg_id} ({key}), producer pid {pid}, rolled back {end - start:.1f}s after storing: "
                f"{cause}; faults meanwhile: {', '.join(dict.fromkeys(faults)) or 'none'}"
            )
    return {**dict(counts), "false_by_cause": dict(causes), "explained_examples": explained}, examples


def _rollback_cause(events: list[tuple[Any, str, str]], rolled_at, faults: list[str]) -> tuple[str, str]:
    """What the message's trace (and the faults of its span) say about a producer that was
    alive: its local transaction lost its database session (a traceback naming it, or an
    UNKNOWN answer while PostgreSQL was cut or down), answered late, or never answered."""
    answers = [(at, d) for at, e, d in events if e == "LOCAL_TRANSACTION"]
    if not answers:
        return "no_answer", "no answer from the local transaction (the producer never ended it)"
    at, detail = answers[0]
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    first, last = (lines[0], lines[-1][:160]) if lines else ("?", "")
    database_faults = [f for f in faults if f.startswith(("pg_terminate_backend", "pg_crash", "PostgreSQL"))]
    if any(name in detail for name in SESSION_LOST) or (first.startswith("UNKNOWN") and database_faults):
        return "session_lost", (
            f"local transaction lost its database session ({', '.join(database_faults) or last}) "
            f"and answered {first}; the checker found no record"
        )
    when = "after" if at > rolled_at else "before"
    return f"answered_{when}", f"local transaction answered {first} {when} the rollback: {last}"
