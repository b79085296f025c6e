"""Worker hooks: a stopping worker releases the deliveries it claimed but did not start."""

from __future__ import annotations

import logging
import signal

from celery.signals import worker_process_init, worker_shutting_down

from txbroker.delivery import stopping

logger = logging.getLogger("txbroker")


@worker_shutting_down.connect
def _on_shutdown(**kwargs) -> None:
    stopping.set()


@worker_process_init.connect
def _in_pool_process(**kwargs) -> None:
    from txbroker.faults import active_faults

    active_faults()  # logs loudly when fault injection is on
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        # Let the current delivery finish, release the rest of the batch, then exit.
        stopping.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
