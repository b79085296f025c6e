"""Worker-side hooks of the bench, wired by ``HarnessConfig.ready()`` only in the worker
processes the bench starts (they have its environment variables); a no-op anywhere else."""

from __future__ import annotations

import os
from pathlib import Path

READY_ENV = "HARNESS_BENCH_READY_DIR"
# A peer's process that is not a Celery worker (the outbox relay, a procrastinate worker):
# it counts its statements from the start and writes them while it runs.
PROCESS_COUNTS_ENV = "HARNESS_BENCH_PROCESS_COUNTS"


def install_worker_hooks() -> None:
    from harness.bench.counting import COUNT_DIR_ENV, install_in_process, install_in_worker

    if os.environ.get(PROCESS_COUNTS_ENV):
        install_in_process()
        _structlog_at_info()
        return
    ready_dir = os.environ.get(READY_ENV)
    if ready_dir:
        from celery.signals import worker_ready

        def on_ready(**kwargs):
            (Path(ready_dir) / str(os.getpid())).touch()

        worker_ready.connect(on_ready, weak=False)
    if os.environ.get(COUNT_DIR_ENV):
        install_in_worker()


def _structlog_at_info() -> None:
    """The outbox relay logs through structlog, whose default prints every level: its
    per-poll debug lines are left out, as the bench's other processes log warnings only
    (its info lines, one a batch, stay: the bench waits for the relay's start line)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
