"""Worker-side hooks of the bench, wired by ``HarnessConfig.ready()`` only in the Celery
workers the bench starts (they have its environment variables); a no-op anywhere else."""

from __future__ import annotations

import os
from pathlib import Path

READY_ENV = "HARNESS_BENCH_READY_DIR"


def install_worker_hooks() -> None:
    from harness.bench.counting import COUNT_DIR_ENV, install_in_worker

    ready_dir = os.environ.get(READY_ENV)
    if ready_dir:
        from celery.signals import worker_ready

        def on_ready(**kwargs):
            (Path(ready_dir) / str(os.getpid())).touch()

        worker_ready.connect(on_ready, weak=False)
    if os.environ.get(COUNT_DIR_ENV):
        install_in_worker()
