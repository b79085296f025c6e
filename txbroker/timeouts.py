"""Time limits for code txbroker calls but does not own: checkers and handlers.

A checker or a handler may block (a lock held by a frozen process, a remote call without a
timeout, a bug). txbroker bounds each call twice:

- in Python, by ``SIGALRM`` (:func:`time_limit`), which interrupts the call with an
  exception; only in a process's main thread, where Celery's prefork pool runs tasks (it
  uses other signals for its own limits);
- in PostgreSQL, by ``SET LOCAL lock_timeout`` and ``statement_timeout`` for the call's
  transaction (:func:`bound_transaction`): a statement blocked inside the driver cannot
  be interrupted from Python, but the server cancels it.

psycopg2 waits for a statement's result in C, where no Python signal handler runs: the
alarm is handled once the server has answered. psycopg 3 waits in Python, so the alarm can
land mid-statement; raising there would leave the session stuck in its statement (and the
transaction unusable), so the alarm asks the server to cancel the statement instead, and
the driver raises ``QueryCanceled``, the database's own answer to a bound.

Celery's soft time limit (``SoftTimeLimitExceeded``) ends the task's work; it is never
taken for a checker's or handler's own failure (:data:`STOP_EXCEPTIONS`).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from django.db import connections

try:  # Celery's (billiard's): a task's soft time limit, raised in the pool process.
    from billiard.exceptions import SoftTimeLimitExceeded

    STOP_EXCEPTIONS: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded,)
except ImportError:  # pragma: no cover - Celery is a dependency of txbroker
    STOP_EXCEPTIONS = ()


class TimeLimitExceeded(Exception):
    """A checker or a handler ran past its time limit (TXBROKER_CHECK_TIMEOUT or
    TXBROKER_HANDLER_TIMEOUT)."""


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float, make_error: Callable[[], BaseException]) -> Iterator[None]:
    """Raise ``make_error()`` in the body if it runs longer than ``seconds`` (0: no limit).

    Nests: an inner limit never extends an outer one, and the outer one is re-armed with
    what is left of it when the inner one ends.
    """
    if seconds <= 0 or not _can_alarm():
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    outer_handler = signal.getsignal(signal.SIGALRM)
    if outer_left and outer_left <= seconds:
        yield  # the outer limit comes first and stays armed
        return
    state = {"armed": True}

    def on_alarm(signum, frame) -> None:
        if not state["armed"]:
            return
        if _cancel_running_statements():
            # The driver raises the cancellation; should the statement finish first, the
            # alarm comes back in a moment and raises.
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise make_error()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left:
            # What is left of the outer limit (at least a moment: it is due, let it fire).
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 0.001))


_TRANSACTION_ACTIVE = 1  # libpq's PQTRANS_ACTIVE: a statement is in progress


def _cancel_running_statements() -> bool:
    """Ask the server to cancel the statement in progress on this thread's connections, if
    any (only psycopg 3 can be found in one by a signal handler); whether it asked."""
    asked = False
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        info = getattr(raw, "info", None)
        if connection.vendor != "postgresql" or info is None:
            continue
        with suppress(Exception):  # a session already gone has nothing to cancel
            if info.transaction_status == _TRANSACTION_ACTIVE:
                cancel = getattr(raw, "cancel_safe", None) or raw.cancel
                cancel()
                asked = True
    return asked


def bound_transaction(alias: str, seconds: float) -> None:
    """Inside a transaction on ``alias``: no lock wait and no statement longer than
    ``seconds`` until it ends (PostgreSQL; elsewhere nothing to do)."""
    connection = connections[alias]
    if seconds <= 0 or connection.vendor != "postgresql":
        return
    milliseconds = str(max(1, math.ceil(seconds * 1000)))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
            [milliseconds, milliseconds],
        )
