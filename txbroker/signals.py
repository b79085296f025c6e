"""Worker hooks: a stopping worker finishes the delivery it is running and releases the
rest of its claimed batch at once, instead of leaving them to the claim timeout."""

from __future__ import annotations

import logging
import os
import signal

from celery.signals import task_postrun, task_prerun, worker_process_init, worker_shutting_down

from txbroker import delivery
from txbroker.faults import active_faults

logger = logging.getLogger("txbroker")

_previous_sigterm = signal.SIG_DFL


@worker_shutting_down.connect
def _on_shutdown(**kwargs) -> None:
    # Solo and thread pools run tasks in this process.
    delivery.stopping.set()


def _on_sigterm(signum, frame) -> None:
    delivery.stopping.set()
    if delivery.in_batch.is_set():
        return  # the batch releases what it has not started; task_postrun then exits
    _exit_as_asked(signum, frame)


def _exit_as_asked(signum, frame) -> None:
    signal.signal(signal.SIGTERM, _previous_sigterm)
    if callable(_previous_sigterm):
        _previous_sigterm(signum, frame)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


@worker_process_init.connect
def _in_pool_process(**kwargs) -> None:
    active_faults()  # logs loudly when fault injection is on


@task_prerun.connect
def _before_task(**kwargs) -> None:
    # Installed at the first task, not at process init: billiard installs its own SIGTERM
    # handler after the initializer runs. Ours chains to it.
    global _previous_sigterm
    current = signal.getsignal(signal.SIGTERM)
    if current is not _on_sigterm:
        _previous_sigterm = current
        signal.signal(signal.SIGTERM, _on_sigterm)


@task_postrun.connect
def _after_task(**kwargs) -> None:
    if delivery.stopping.is_set() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        logger.info("pool process %s stopping after releasing its batch", os.getpid())
        _exit_as_asked(signal.SIGTERM, None)
