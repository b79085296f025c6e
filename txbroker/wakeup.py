"""Wake-ups of the delivery fast path (a delivery task), coalesced: at most one waiting in
the queue.

A delivery task is only a wake-up: it claims whatever is due until nothing is. So when a
wake-up is already queued and has not started yet, a second one would find nothing to do
that the first will not do: it would only cost a Celery message, a task run and a claim
query. A mark says "a wake-up is queued": a commit publishes only when it sets the mark
itself, and the task clears the mark as it starts, *before* it claims. So a commit that
skips publishing saw the mark set; the task that clears it after that claims after that,
and finds the commit's deliveries. Under load this turns one Celery task per payment into
one per batch; at low load every commit still publishes.

Where the mark lives (``TXBROKER_WAKEUP_MARK``, ``auto`` by default):

- ``redis`` (auto with a ``redis://`` broker): a key set with ``SET NX``, one round trip.
- ``database`` (auto with any other server broker, RabbitMQ's ``amqp://`` included): the
  one row of ``WakeupMark``, set by a conditional ``UPDATE`` (it matches only a row whose
  mark is clear or stale, by the database's clock) and cleared by the task. Two commits
  racing for it are serialized by the row lock: the loser re-reads the winner's row and
  skips. A skipping commit costs the ``UPDATE`` (which writes and locks nothing when it
  matches nothing) and one primary-key read; the row is created when missing (a new or
  flushed table).
- ``none`` (auto with the filesystem or memory transport of the embedded mode, where SQLite
  serializes every writer and a wake-up is a small file): every commit publishes.

The mark expires (``TXBROKER_WAKEUP_TTL``) so that a lost task (a broker restart that kept
nothing, a killed worker holding it) stops suppressing wake-ups; the sweep covers the gap,
as it covers every lost task. ``TXBROKER_WAKEUP_COALESCE=0`` publishes on every commit.

The task is published by its name: what wakes deliveries (a commit, a replay, the sweep)
never imports txbroker.tasks, which imports them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from celery import signature
from django.conf import settings
from django.db.models import Q

from txbroker import dbtime
from txbroker.conf import txsettings
from txbroker.db import broker_db

logger = logging.getLogger("txbroker")

PENDING_KEY = "txbroker:deliver:pending"
# The delivery task's name, as txbroker.tasks registers it.
DELIVER_TASK = "txbroker.deliver"
# The primary key of WakeupMark's only row.
MARK_ROW = 1
_IN_PROCESS_TRANSPORTS = ("filesystem://", "memory://")

_client: Optional[Any] = None
_client_for: Optional[tuple[int, str]] = None


def _broker_url() -> str:
    return str(getattr(settings, "CELERY_BROKER_URL", ""))


def mark_kind() -> str:
    """Where the "wake-up queued" mark lives: ``redis``, ``database`` or ``none``."""
    if not txsettings.WAKEUP_COALESCE:
        return "none"
    kind = txsettings.WAKEUP_MARK
    if kind != "auto":
        return kind
    url = _broker_url()
    if url.startswith(("redis://", "rediss://")):
        return "redis"
    if not url or url.startswith(_IN_PROCESS_TRANSPORTS):
        return "none"
    return "database"


def _redis() -> Any:
    global _client, _client_for
    url = _broker_url()
    # One client per process and broker (a forked child, or a test that moves the broker).
    if _client is None or _client_for != (os.getpid(), url):
        import redis

        _client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        _client_for = (os.getpid(), url)
    return _client


def _marks() -> Any:
    # Imported here: txbroker.models is not loaded yet when transitions import this module.
    from txbroker.models import WakeupMark

    return WakeupMark.objects.using(broker_db())


def _set_database_mark() -> bool:
    stale = Q(queued_at__isnull=True) | Q(queued_at__lt=dbtime.before(txsettings.WAKEUP_TTL))
    if _marks().filter(stale, pk=MARK_ROW).update(queued_at=dbtime.now()):
        return True
    # Nothing matched: a fresh mark (a wake-up is queued), or no row yet.
    _, created = _marks().get_or_create(pk=MARK_ROW, defaults={"queued_at": dbtime.now()})
    return created


def should_publish() -> bool:
    """True when this commit must publish a wake-up (none is queued, or we cannot tell)."""
    kind = mark_kind()
    if kind == "none":
        return True
    try:
        if kind == "redis":
            ttl_ms = int(txsettings.WAKEUP_TTL * 1000)
            return bool(_redis().set(PENDING_KEY, b"1", nx=True, px=ttl_ms))
        return _set_database_mark()
    except Exception:
        logger.warning("could not check for a queued wake-up; publishing one", exc_info=True)
        return True


def started() -> None:
    """A delivery task starts: later commits must publish again. Call before claiming."""
    kind = mark_kind()
    if kind == "none":
        return
    try:
        if kind == "redis":
            _redis().delete(PENDING_KEY)
        else:
            _marks().filter(pk=MARK_ROW).update(queued_at=None)
    except Exception:
        # The mark expires by itself; until then the sweep covers any delivery left due.
        logger.warning("could not clear the queued wake-up mark", exc_info=True)


def pending() -> bool:
    """True while a fresh mark says a wake-up is queued and has not started (for tests and
    operators; a commit never reads it apart from setting it)."""
    kind = mark_kind()
    if kind == "redis":
        return bool(_redis().exists(PENDING_KEY))
    if kind == "database":
        return _marks().filter(pk=MARK_ROW, queued_at__gte=dbtime.before(txsettings.WAKEUP_TTL)).exists()
    return False


def publish() -> None:
    """Enqueue one delivery task, not coalesced."""
    signature(DELIVER_TASK).delay()


def wake_deliveries(*, coalesce: bool = True) -> None:
    """Enqueue the fast path after commit, unless a wake-up is already queued and not
    started (``coalesce``). A failure only delays delivery: the sweep finds every due
    delivery in the database."""
    try:
        if not coalesce or should_publish():
            publish()
    except Exception:
        logger.warning("could not enqueue delivery task; the sweep will pick it up", exc_info=True)
