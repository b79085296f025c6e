"""Faults from outside while the load runs: SIGKILL a gunicorn worker and a Celery process
every few seconds, wipe Redis, terminate the application's PostgreSQL connections; and the
supervisor that restarts what died. Every fault is counted by kind."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from harness.chaos.cluster import Cluster
from harness.procs import pg_terminate, redis_wipe

logger = logging.getLogger("harness.chaos")


@dataclass
class Schedule:
    kill_every: float = 3.0
    redis_every: float = 15.0
    pg_every: float = 10.0


@dataclass
class Injector:
    cluster: Cluster
    database_url: str
    redis_url: str
    redis_whole_server: bool
    schedule: Schedule
    rng: random.Random
    injected: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _faults_on: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._faults_on.set()
        self._thread = threading.Thread(target=self._loop, name="chaos-injector", daemon=True)
        self._thread.start()

    def stop_faults(self) -> None:
        """No more faults from outside; the supervisor keeps running."""
        self._faults_on.clear()

    def stop(self) -> None:
        self._faults_on.clear()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _jitter(self, every: float) -> float:
        return every * self.rng.uniform(0.5, 1.5)

    def _loop(self) -> None:
        now = time.monotonic()
        next_kill = now + self._jitter(self.schedule.kill_every)
        next_redis = now + self._jitter(self.schedule.redis_every)
        next_pg = now + self._jitter(self.schedule.pg_every)
        while not self._stop.wait(0.2):
            try:
                self.cluster.supervise()
            except Exception as exc:  # noqa: BLE001 - a failed restart is retried next tick
                self.errors.append(f"supervise: {exc}")
                logger.warning("supervisor: %s", exc)
            if not self._faults_on.is_set():
                continue
            now = time.monotonic()
            try:
                if now >= next_kill:
                    next_kill = now + self._jitter(self.schedule.kill_every)
                    if self.cluster.sigkill_web_worker(self.rng):
                        self.injected["sigkill_gunicorn_worker"] += 1
                    self.injected[self.cluster.sigkill_celery(self.rng)] += 1
                if now >= next_redis:
                    next_redis = now + self._jitter(self.schedule.redis_every)
                    dropped = redis_wipe(self.redis_url, whole_server=self.redis_whole_server)
                    self.injected["redis_flushall"] += 1
                    self.injected["redis_clients_killed"] += dropped
                if now >= next_pg:
                    next_pg = now + self._jitter(self.schedule.pg_every)
                    terminated = pg_terminate(self.database_url)
                    self.injected["pg_terminate_backend"] += 1
                    self.injected["pg_backends_terminated"] += terminated
            except Exception as exc:  # noqa: BLE001 - a fault not injected is reported, not fatal
                self.errors.append(f"inject: {type(exc).__name__}: {exc}")
                logger.warning("injector: %s", exc)
