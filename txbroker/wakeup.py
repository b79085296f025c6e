"""Wake-ups of the delivery fast path (a delivery task), coalesced: at most one waiting in
the queue.

A delivery task is only a wake-up: it claims whatever is due until nothing is. So when a
wake-up is already queued and has not started yet, a second one would find nothing to do
that the first will not do: it would only cost a Celery message, a task run and a claim
query. With a Redis broker a key marks "a wake-up is queued": a commit publishes only when
it sets the key (``SET NX``), and the task deletes the key as it starts, *before* it
claims. So a commit that skips publishing saw the key set; the task that deletes it after
that claims after that, and finds the commit's deliveries. Under load this turns one
Celery task per payment into one per batch; at low load every commit still publishes.

The key expires (``TXBROKER_WAKEUP_TTL``) so that a lost task (a Redis restart, a killed
worker holding it) stops suppressing wake-ups; the sweep covers the gap, as it covers
every lost task. Any other broker (the filesystem transport), or
``TXBROKER_WAKEUP_COALESCE=0``, publishes on every commit.

The task is published by its name: what wakes deliveries (a commit, a replay, the sweep)
never imports txbroker.tasks, which imports them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from celery import signature
from django.conf import settings

from txbroker.conf import txsettings

logger = logging.getLogger("txbroker")

PENDING_KEY = "txbroker:deliver:pending"
# The delivery task's name, as txbroker.tasks registers it.
DELIVER_TASK = "txbroker.deliver"

_client: Optional[Any] = None
_client_for: Optional[tuple[int, str]] = None


def _redis() -> Optional[Any]:
    global _client, _client_for
    url = str(getattr(settings, "CELERY_BROKER_URL", ""))
    if not txsettings.WAKEUP_COALESCE or not url.startswith(("redis://", "rediss://")):
        return None
    # One client per process and broker (a forked child, or a test that moves the broker).
    if _client is None or _client_for != (os.getpid(), url):
        import redis

        _client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        _client_for = (os.getpid(), url)
    return _client


def should_publish() -> bool:
    """True when this commit must publish a wake-up (none is queued, or we cannot tell)."""
    client = _redis()
    if client is None:
        return True
    try:
        return bool(client.set(PENDING_KEY, b"1", nx=True, px=int(txsettings.WAKEUP_TTL * 1000)))
    except Exception:
        logger.warning("could not check for a queued wake-up; publishing one", exc_info=True)
        return True


def started() -> None:
    """A delivery task starts: later commits must publish again. Call before claiming."""
    client = _redis()
    if client is None:
        return
    try:
        client.delete(PENDING_KEY)
    except Exception:
        # The key expires by itself; until then the sweep covers any delivery left due.
        logger.warning("could not clear the queued wake-up mark", exc_info=True)


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
