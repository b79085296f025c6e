"""The consumer processes of a design's bench run: the Celery worker pool for naive and
txbroker; for the peers, their own processes as their documentation runs them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from django.db import connection

from harness.bench.hooks import PROCESS_COUNTS_ENV
from harness.bench.processes import ROOT, Worker, tree_cpu_seconds

RELAY_STARTED = "celery_outbox_relay_started"  # what the relay logs once it runs


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _procrastinate_workers() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_workers")
        return int(cursor.fetchone()[0])


class Consumers:
    """A design's consumer processes, started together, measured and stopped together."""

    def __init__(self, design: str, work_dir: Path, *, workers: int, env: dict[str, str], label: str) -> None:
        self.procs: list[Worker] = []
        # Not Celery workers: they count from ready(), and log warnings only as the Celery
        # workers do (``--loglevel=WARNING``): procrastinate logs three lines a job at INFO.
        counted = {**env, PROCESS_COUNTS_ENV: "1", "DJANGO_LOG_LEVEL": "WARNING"}
        if design == "procrastinate":
            # One job at a time per process (its default concurrency), ``workers`` processes:
            # as many handlers at once as the Celery pool runs.
            for index in range(workers):
                self.procs.append(
                    Worker(
                        work_dir,
                        concurrency=1,
                        env=counted,
                        name=f"{label}-{index}",
                        argv=_manage("procrastinate", "worker"),
                        ready=lambda n=index + 1: _procrastinate_workers() >= n,
                    )
                )
            return
        extra: tuple[str, ...] = ()
        if design == "celery_outbox":
            extra = ("--include", "harness.peers.outbox")
        self.procs.append(Worker(work_dir, concurrency=workers, env=env, name=label, extra=extra))
        if design == "celery_outbox":
            relay = Worker(
                work_dir,
                concurrency=1,
                env=counted,
                name=f"{label}-relay",
                argv=_manage("celery_outbox_relay"),
                ready=lambda: RELAY_STARTED in relay.log(),
            )
            self.procs.append(relay)

    def wait_ready(self, timeout: float = 60) -> None:
        for proc in self.procs:
            proc.wait_ready(timeout)

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_seconds(proc.pid) for proc in self.procs)

    def stop(self) -> Optional[int]:
        codes = [proc.stop() for proc in self.procs]
        return next((code for code in codes if code), codes[0] if codes else None)
