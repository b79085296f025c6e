"""Fault injection: at each named point the process dies at once, as SIGKILL would.

Off by default. ``TXBROKER_FAULTS=after_half_stored=0.05,handler_after_commit=0.05`` makes
each point kill the process with that probability. Used by the crash tests and the chaos
command; when unset, :func:`fault_point` is one dictionary lookup.

One point raises instead of killing: ``handler_first_attempt_error`` makes a handler's
first attempt fail with :class:`InjectedFault` (the delivery is retried), as a handler
whose dependency has a blip would (see :func:`fault_error`).
"""

from __future__ import annotations

import logging
import os
import random
import sys

logger = logging.getLogger("txbroker.faults")

FAULT_POINTS = (
    # the half message is stored; the local transaction has not run
    "after_half_stored",
    # the local transaction committed; the end of the transaction is not stored
    "after_local_transaction",
    # a handler ran inside its delivery transaction, which has not committed
    "handler_before_commit",
    # a handler's transaction committed; the Celery task is not acknowledged
    "handler_after_commit",
    # a handler's first attempt raises InjectedFault before the handler runs (not a kill)
    "handler_first_attempt_error",
)


class InjectedFault(Exception):
    """Raised by :func:`fault_error`: a failure on purpose, from TXBROKER_FAULTS."""


_active: dict[str, float] | None = None


def active_faults() -> dict[str, float]:
    global _active
    if _active is None:
        from txbroker.conf import txsettings

        _active = txsettings.FAULTS
        if _active:
            logger.warning(
                "TXBROKER_FAULTS is set: this process (pid %s) WILL KILL ITSELF at random "
                "at %s. Never set it in production.",
                os.getpid(),
                ", ".join(f"{k}={v}" for k, v in _active.items()),
            )
    return _active


def reset() -> None:
    """Forget the parsed faults (tests change the environment between cases)."""
    global _active
    _active = None


def fault_point(name: str) -> None:
    """With the configured probability of ``name``, kill this process now (exit 137)."""
    probability = active_faults().get(name)
    if probability and random.random() < probability:
        logger.critical("fault injected: %s, pid %s exits now", name, os.getpid())
        sys.stderr.flush()
        os._exit(137)


def fault_error(name: str) -> None:
    """With the configured probability of ``name``, raise :class:`InjectedFault`."""
    probability = active_faults().get(name)
    if probability and random.random() < probability:
        logger.warning("fault injected: %s, pid %s raises", name, os.getpid())
        raise InjectedFault(f"fault injected: {name} (TXBROKER_FAULTS)")
