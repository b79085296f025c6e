"""Fault injection: at each named point the process dies at once, as SIGKILL would.

Off by default. ``TXBROKER_FAULTS=after_half_stored=0.05,handler_after_commit=0.05`` makes
each point kill the process with that probability. Used by the crash tests and the chaos
command; when unset, :func:`fault_point` is one dictionary lookup.

One point raises instead of killing: ``handler_first_attempt_error`` makes a handler's
first attempt fail with :class:`InjectedFault` (the delivery is retried), as a handler
whose dependency has a blip would (see :func:`fault_error`).

Two points model bad messages and slow dependencies rather than crashes:
``poison_message`` picks that share of messages (by their first business key, else their
id, so the same ones every time, in every process: :func:`is_poison`) whose handler kills its worker on every
attempt; ``checker_block`` makes that share of checker calls block for a minute, as a
checker waiting on a dead dependency would (:func:`fault_block`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
import time
from collections.abc import Sequence

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
    # that share of messages kills the worker in every attempt of every handler (poison)
    "poison_message",
    # a checker call blocks for a minute before it answers (a slow dependency)
    "checker_block",
)
# What each point does when it fires, as the start-up warning says it; the rest kill.
KILLS = "the process exits at once (status 137), as SIGKILL would"
EFFECTS = {
    "handler_first_attempt_error": "a handler's first attempt raises InjectedFault (the process lives on, "
    "the delivery is retried)",
    "poison_message": "that share of messages (by key) makes its handler exit the worker (status 137) "
    "on every attempt",
    "checker_block": "a checker call blocks for up to {block:g} s (the check's time limit interrupts it)",
}
# How long checker_block blocks (the check's time limit interrupts it first).
BLOCK_SECONDS = 60.0


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
                "TXBROKER_FAULTS is set (pid %s): %s. Never set it in production.",
                os.getpid(),
                "; ".join(
                    f"{name}={probability:g}: {EFFECTS.get(name, KILLS).format(block=BLOCK_SECONDS)}"
                    for name, probability in _active.items()
                ),
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


def is_poison(identity: str, probability: float | None = None) -> bool:
    """Whether ``poison_message`` picks the message of this business key (or id, for a
    message with no key): the same answer in every process and every run."""
    share = active_faults().get("poison_message", 0.0) if probability is None else probability
    if not share:
        return False
    digest = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big")
    return digest / 2**64 < share


def poison_identity(msg_id: str, keys: Sequence[str]) -> str:
    """What picks a message as poison: its first business key, else its id."""
    return keys[0] if keys else msg_id


def poison_point(identity: str) -> None:
    """A poison message's handler kills its worker, every attempt (exit 137)."""
    if is_poison(identity):
        logger.critical("fault injected: poison_message %s, pid %s exits now", identity, os.getpid())
        sys.stderr.flush()
        os._exit(137)


def fault_block(name: str) -> None:
    """With the configured probability of ``name``, block for a minute."""
    probability = active_faults().get(name)
    if probability and random.random() < probability:
        logger.warning("fault injected: %s, pid %s blocks for %gs", name, os.getpid(), BLOCK_SECONDS)
        time.sleep(BLOCK_SECONDS)
